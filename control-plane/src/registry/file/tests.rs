use std::path::Path;

use super::*;

fn load(text: &str) -> Result<(Objects, Vec<FileWarning>), LoadError> {
    let mut objects = Objects::default();
    let mut warnings = Vec::new();
    load_text(Path::new("mesh.yaml"), text, &mut objects, &mut warnings)?;
    Ok((objects, warnings))
}

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80}]
";

#[test]
fn multi_document_files_load_every_kind() {
    let text = format!(
        "{SERVICE}---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n# only a comment\n---\n\
apiVersion: weft.io/v1alpha1\nkind: Sidecar\nmetadata: {{name: s}}\nspec: {{egress: [\"./*\"]}}\n"
    );
    let (objects, warnings) = load(&text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.namespaces.len(), 1);
    // A namespaced object without a namespace lands in `default`, like kubectl apply.
    assert!(
        objects
            .sidecars
            .contains_key(&crate::model::Key::new("default", "s"))
    );
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let text =
        format!("{SERVICE}---\napiVersion: v1\nkind: Service\nmetadata: {{name: x\n  bad: [\n");
    let err = load(&text).unwrap_err();
    let LoadError::Invalid { path, line, reason } = err else {
        panic!("wrong error {err:?}")
    };
    assert_eq!(path, Path::new("mesh.yaml"));
    assert!((7..=10).contains(&line), "line {line}: {reason}");
}

#[test]
fn schema_error_names_kind_and_line() {
    let text = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n    - port: eighty\n";
    let err = load(text).unwrap_err().to_string();
    assert!(err.starts_with("mesh.yaml:6:"), "{err}");
    assert!(err.contains("Service"), "{err}");
}

#[test]
fn unknown_kind_is_skipped_with_a_warning() {
    let text =
        format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d}}\n---\n{SERVICE}");
    let (objects, warnings) = load(&text).unwrap();
    assert_eq!(objects.services.len(), 1);
    assert_eq!(warnings.len(), 1);
    assert!(warnings[0].reason.contains("Deployment"), "{}", warnings[0]);
    assert_eq!(warnings[0].line, 1);
}

#[test]
fn duplicates_keep_the_first_with_a_warning() {
    let second = SERVICE.replace("port: 80", "port: 81");
    let (objects, warnings) = load(&format!("{SERVICE}---\n{second}")).unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].reason.contains("duplicate Service shop/web"));
    assert_eq!(warnings[0].line, 7);
    let svc = objects.services.values().next().unwrap();
    assert_eq!(
        svc.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].port,
        80
    );
}

#[test]
fn document_without_kind_is_an_error() {
    let err = load("metadata: {name: x}\n").unwrap_err().to_string();
    assert!(err.contains("no apiVersion and kind"), "{err}");
}

#[test]
fn load_dir_reads_yaml_files_in_name_order_and_ignores_others() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.yml"), SERVICE).unwrap();
    std::fs::write(dir.path().join("a.yaml"), SERVICE.replace("web", "api")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not: [yaml").unwrap();
    let (objects, _) = load_dir(dir.path()).unwrap();
    let names: Vec<_> = objects.services.keys().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["api", "web"]);
}
