//! The xDS resource types weft serves and reads, with their type URLs: written once, for the
//! control plane, the proxy, their tests and the benches.

/// An xDS resource type weft speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceType {
    /// CDS.
    Cluster,
    /// EDS.
    Endpoint,
    /// LDS.
    Listener,
    /// RDS.
    Route,
}

impl ResourceType {
    /// Every type, in push order.
    pub const ALL: [Self; 4] = [Self::Cluster, Self::Endpoint, Self::Listener, Self::Route];

    /// The type URL of the resource message.
    pub const fn type_url(self) -> &'static str {
        match self {
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::Endpoint => "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
        }
    }

    /// The type for a type URL, if weft speaks it.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Index into per-type arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Short name for metrics and logs.
    pub const fn short(self) -> &'static str {
        match self {
            Self::Cluster => "cds",
            Self::Endpoint => "eds",
            Self::Listener => "lds",
            Self::Route => "rds",
        }
    }

    /// Whether a state-of-the-world response must list every resource (omission means removal).
    pub const fn sotw_full_state(self) -> bool {
        matches!(self, Self::Cluster | Self::Listener)
    }
}

/// CDS's type URL.
pub const CDS: &str = ResourceType::Cluster.type_url();
/// EDS's type URL.
pub const EDS: &str = ResourceType::Endpoint.type_url();
/// LDS's type URL.
pub const LDS: &str = ResourceType::Listener.type_url();
/// RDS's type URL.
pub const RDS: &str = ResourceType::Route.type_url();

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_reads_back_from_its_url() {
        for t in ResourceType::ALL {
            assert_eq!(ResourceType::from_type_url(t.type_url()), Some(t));
            assert_eq!(ResourceType::ALL[t.index()], t);
        }
        assert_eq!(ResourceType::from_type_url("type.googleapis.com/x"), None);
    }
}
