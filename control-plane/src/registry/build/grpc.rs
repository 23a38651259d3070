//! GRPCRoute, read as the HTTPRoute it is on the wire. A gRPC call is an HTTP/2 POST to
//! `/<service>/<method>`, so a method match is a path match; every other field (parentRefs,
//! backendRefs, filters, header matches) has HTTPRoute's shape. Converting once keeps one
//! validation and translation path for both kinds.

use gateway_api::experimental::grpcroutes::{
    GrpcRoute, GrpcRouteRulesMatchesMethod, GrpcRouteRulesMatchesMethodType,
};
use gateway_api::experimental::httproutes::HttpRoute;
use serde_json::{Value, json};

/// The HTTPRoute that routes what `route` routes.
pub(super) fn as_http_route(route: &GrpcRoute) -> Result<HttpRoute, String> {
    let mut spec = serde_json::to_value(&route.spec).map_err(|e| e.to_string())?;
    let typed_rules = route.spec.rules.iter().flatten();
    if let Some(rules) = spec.get_mut("rules").and_then(Value::as_array_mut) {
        for (i, (rule, typed)) in rules.iter_mut().zip(typed_rules).enumerate() {
            let Some(matches) = &typed.matches else {
                continue;
            };
            let mut out = Vec::new();
            for m in matches {
                let path = path(m.method.as_ref()).map_err(|e| format!("rule {i}: {e}"))?;
                let mut http = json!({ "path": path });
                if let Some(h) = &m.headers {
                    http["headers"] = serde_json::to_value(h).map_err(|e| e.to_string())?;
                }
                out.push(http);
            }
            rule["matches"] = Value::Array(out);
        }
    }
    Ok(HttpRoute {
        metadata: route.metadata.clone(),
        spec: serde_json::from_value(spec).map_err(|e| e.to_string())?,
        status: None,
    })
}

/// The path match of a method match, as Gateway API defines it: exact names make an exact path
/// (or, with the service alone, the service's prefix); regular expressions match
/// `/<service>/<method>` whole, an omitted part matching any name.
fn path(m: Option<&GrpcRouteRulesMatchesMethod>) -> Result<Value, String> {
    let any = "[^/]+";
    let Some(m) = m else {
        return Ok(json!({"type": "PathPrefix", "value": "/"}));
    };
    let (service, method) = (m.service.as_deref(), m.method.as_deref());
    if m.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression) {
        // Grouped, so an alternation (`a|b`) stays inside its part.
        let re = format!(
            "/(?:{})/(?:{})",
            service.unwrap_or(any),
            method.unwrap_or(any)
        );
        return Ok(json!({"type": "RegularExpression", "value": re}));
    }
    for name in [service, method].into_iter().flatten() {
        if name.is_empty() || name.contains('/') {
            return Err(format!("method match name {name:?} is empty or has a '/'"));
        }
    }
    Ok(match (service, method) {
        (Some(s), Some(me)) => json!({"type": "Exact", "value": format!("/{s}/{me}")}),
        (Some(s), None) => json!({"type": "PathPrefix", "value": format!("/{s}")}),
        (None, Some(me)) => json!({
            "type": "RegularExpression",
            "value": format!("/{any}/{}", regex::escape(me)),
        }),
        (None, None) => json!({"type": "PathPrefix", "value": "/"}),
    })
}
