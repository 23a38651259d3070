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

#[test]
fn a_cached_reload_sees_every_change_and_still_warns_of_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("a.yaml", SERVICE);
    write("b.yaml", &SERVICE.replace("web", "api"));
    let mut cache = Cache::default();
    let (first, _) = cache.load_dir(dir.path()).unwrap();
    assert_eq!(first.services.len(), 2);

    // b changes, a does not: a's documents come from the cache, b's are parsed anew.
    write("b.yaml", &SERVICE.replace("web", "db"));
    let (second, _) = cache.load_dir(dir.path()).unwrap();
    let names: Vec<_> = second.services.keys().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["db", "web"]);

    // A file that now copies another's object: the duplicate warning is given on every load,
    // from cached files too, and the first file's object is kept.
    write("c.yaml", SERVICE);
    for _ in 0..2 {
        let (objects, warnings) = cache.load_dir(dir.path()).unwrap();
        assert_eq!(objects.services.len(), 2);
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].path.ends_with("c.yaml"), "{warnings:?}");
    }

    // A broken file fails the load and leaves the cache as it was; a deleted one is gone.
    write("b.yaml", "kind: [");
    assert!(cache.load_dir(dir.path()).is_err());
    std::fs::remove_file(dir.path().join("b.yaml")).unwrap();
    std::fs::remove_file(dir.path().join("c.yaml")).unwrap();
    let (last, warnings) = cache.load_dir(dir.path()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let names: Vec<_> = last.services.keys().map(|k| k.name.clone()).collect();
    assert_eq!(names, ["web"]);
}

#[test]
fn an_invalid_field_is_located_although_the_document_is_parsed_once() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports: [{port: eighty}]\n";
    let err = load(text).unwrap_err().to_string();
    assert!(err.starts_with("mesh.yaml:5:"), "{err}");
}

/// `kubectl get svc,endpointslices,cm -o yaml > mesh.yaml` writes one `List` of the objects:
/// each item loads as its own document would, an unknown kind among them is said, and an item
/// that does not fit its kind fails the file, naming the item.
#[test]
fn a_kubectl_list_loads_its_items() {
    let text = "apiVersion: v1
kind: List
metadata: {resourceVersion: \"\"}
items:
- apiVersion: v1
  kind: Service
  metadata: {name: web, namespace: shop}
  spec: {ports: [{name: http, port: 80}]}
- apiVersion: discovery.k8s.io/v1
  kind: EndpointSlice
  metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
  addressType: IPv4
  endpoints: [{addresses: [10.1.0.1]}]
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: cm, namespace: shop}
";
    let (objects, warnings) = load(text).unwrap();
    assert_eq!(objects.services.len(), 1);
    assert_eq!(objects.endpoint_slices.len(), 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].to_string().contains("ConfigMap"),
        "{warnings:?}"
    );

    let bad = text.replace("port: 80", "port: eighty");
    let err = load(&bad).unwrap_err().to_string();
    assert!(err.contains("List: items[0]: Service:"), "{err}");
}

/// Hidden files (macOS's binary `._` twins of copied files) are not read; a subdirectory is not
/// read either, and says so rather than leaving its Services out without a word.
#[test]
fn hidden_files_are_skipped_and_a_subdirectory_is_said() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), SERVICE).unwrap();
    std::fs::write(
        dir.path().join("._mesh.yaml"),
        [0x00, 0x05, 0x16, 0x07, 0xff, 0xfe],
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("shop")).unwrap();
    std::fs::write(
        dir.path().join("shop/more.yaml"),
        SERVICE.replace("web", "api"),
    )
    .unwrap();
    let (objects, warnings) = load_dir(dir.path()).unwrap();
    assert_eq!(objects.services.len(), 1);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].path.ends_with("shop"), "{warnings:?}");
    assert!(
        warnings[0].reason.starts_with("a subdirectory: not read"),
        "{warnings:?}"
    );
}

/// YAML merge keys (`<<: *anchor`), which kubectl applies, are applied.
#[test]
fn merge_keys_are_applied() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - &web {name: http, port: 80, targetPort: 8080}
  - {<<: *web, name: http-alt, port: 81}
";
    let (objects, warnings) = load(text).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let svc = &objects.services[&crate::model::Key::new("shop", "web")];
    let ports = svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert_eq!(
        (ports[1].port, ports[1].name.as_deref()),
        (81, Some("http-alt"))
    );
    assert_eq!(
        ports[1].target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(8080))
    );
}

/// A field the kind does not have (a misspelling kubectl would refuse) loads the object and
/// names the field, rather than leaving a setting out without a word.
#[test]
fn an_unknown_field_is_named() {
    let text = "apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{name: http, port: 80, targetport: 8080}]
---
apiVersion: weft.io/v1alpha1
kind: TrafficPolicy
metadata: {name: tp, namespace: shop}
spec: {targetRefs: [{kind: Service, name: web}], connectionPool: {maxConnection: 10}}
";
    let (objects, warnings) = load(text).unwrap();
    assert_eq!(objects.services.len(), 1);
    let said: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        said,
        [
            "mesh.yaml:1: Service web: unknown field spec.ports.0.targetport: ignored",
            "mesh.yaml:7: TrafficPolicy tp: unknown field spec.connectionPool.maxConnection: ignored"
        ]
    );
}

/// The tests' debounce: 50 ms of quiet, a second at most.
const DEBOUNCE: Debounce = Debounce {
    quiet: Duration::from_millis(50),
    max: Duration::from_secs(1),
};

/// Receives the watcher's next signal within `within`; `false` if none came. A `false` is how
/// these tests prove a change set off no reload: file events come from the OS in their own time,
/// and the debounce would merge a barrier edit's signal with the one being ruled out.
async fn signalled(rx: &mut mpsc::Receiver<()>, within: Duration) -> bool {
    tokio::time::timeout(within, rx.recv()).await.is_ok()
}

/// A file written slowly (a pause longer than the debounce between two halves) is read only
/// once it is closed: its first half alone is valid YAML that lacks a Service.
#[tokio::test]
async fn a_slow_writer_is_waited_for_until_it_closes_its_file() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    watch(dir.path(), DEBOUNCE, tx).unwrap();
    let path = dir.path().join("mesh.yaml");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(SERVICE.as_bytes()).unwrap();
    f.flush().unwrap();
    assert!(
        !signalled(&mut rx, Duration::from_millis(400)).await,
        "reloaded while the file was open for writing"
    );
    f.write_all(format!("---\n{}", SERVICE.replace("web", "api")).as_bytes())
        .unwrap();
    drop(f);
    assert!(signalled(&mut rx, Duration::from_secs(2)).await);
    assert_eq!(load_dir(dir.path()).unwrap().0.services.len(), 2);
    // Reading the directory is no change: a reload must not set off another.
    assert!(!signalled(&mut rx, Duration::from_millis(300)).await);
    // An editor's swap file kept open beside it does not hold reloads back.
    let mut swap = std::fs::File::create(dir.path().join(".mesh.yaml.swp")).unwrap();
    swap.write_all(b"swap").unwrap();
    std::fs::write(&path, SERVICE).unwrap();
    assert!(signalled(&mut rx, Duration::from_millis(1000)).await);
    drop(swap);
}

/// The registry path is followed when another directory takes its place: a symlink swapped
/// with `ln -sfn` (as a ConfigMap mount or a deploy tool does), or a directory removed and
/// made again. Edits inside the new one are then seen too.
#[tokio::test]
async fn a_directory_replaced_under_the_registry_path_is_followed() {
    let base = tempfile::tempdir().unwrap();
    let (a, b, link) = (
        base.path().join("a"),
        base.path().join("b"),
        base.path().join("registry"),
    );
    for d in [&a, &b] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(a.join("mesh.yaml"), SERVICE).unwrap();
    std::fs::write(b.join("mesh.yaml"), SERVICE.replace("web", "api")).unwrap();
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    watch(&link, DEBOUNCE, tx).unwrap();
    let names = |dir: &Path| -> Vec<String> {
        let (objects, _) = load_dir(dir).unwrap();
        objects.services.keys().map(|k| k.name.clone()).collect()
    };

    // `ln -sfn b registry`: a new link renamed over the old one.
    let tmp = base.path().join(".registry.tmp");
    std::os::unix::fs::symlink(&b, &tmp).unwrap();
    std::fs::rename(&tmp, &link).unwrap();
    assert!(signalled(&mut rx, Duration::from_secs(2)).await);
    assert_eq!(names(&link), ["api"]);
    assert!(
        !signalled(&mut rx, Duration::from_millis(300)).await,
        "a read signalled"
    );
    std::fs::write(b.join("more.yaml"), SERVICE.replace("web", "db")).unwrap();
    assert!(
        signalled(&mut rx, Duration::from_secs(2)).await,
        "b not watched"
    );
    // The old target is no longer the registry: its edits are not signalled.
    std::fs::write(a.join("more.yaml"), SERVICE).unwrap();
    assert!(!signalled(&mut rx, Duration::from_millis(300)).await);

    // Removed and made again, as `rm -rf registry && cp -r new registry` does.
    std::fs::remove_file(&link).unwrap();
    std::fs::create_dir(&link).unwrap();
    std::fs::write(link.join("mesh.yaml"), SERVICE.replace("web", "cache")).unwrap();
    assert!(signalled(&mut rx, Duration::from_secs(2)).await);
    assert_eq!(names(&link), ["cache"]);
    while signalled(&mut rx, Duration::from_millis(200)).await {}
    std::fs::write(link.join("mesh.yaml"), SERVICE.replace("web", "queue")).unwrap();
    assert!(
        signalled(&mut rx, Duration::from_secs(2)).await,
        "new dir not watched"
    );
}

/// A file beside the registry's that is written to without pause (an app's log) neither sets
/// off reloads nor holds back the reload an edit of a registry file asks for.
#[tokio::test]
async fn a_busy_log_file_beside_the_registry_does_not_hold_reloads_back() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("mesh.yaml"), SERVICE).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    watch(dir.path(), DEBOUNCE, tx).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[allow(clippy::disallowed_methods)] // the writer is a std thread, off the runtime
    let log = {
        let (stop, path) = (stop.clone(), dir.path().join("app.log"));
        std::thread::spawn(move || {
            let mut f = std::fs::File::create(path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                f.write_all(b"a line\n").unwrap();
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    assert!(
        !signalled(&mut rx, Duration::from_millis(400)).await,
        "the log set off a reload"
    );
    std::fs::write(dir.path().join("mesh.yaml"), SERVICE.replace("web", "api")).unwrap();
    assert!(signalled(&mut rx, Duration::from_secs(1)).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    log.join().unwrap();
}

/// A registry file rewritten every 50 ms (a tool that regenerates it in a loop) still gets
/// reloads at most the debounce maximum apart, and a change made in the middle of the stream
/// is signalled within that maximum, not only once the writes stop.
#[tokio::test]
async fn a_file_rewritten_without_pause_is_reloaded_at_each_debounce_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mesh.yaml");
    std::fs::write(&path, SERVICE).unwrap();
    let (tx, mut rx) = mpsc::channel(4);
    watch(dir.path(), DEBOUNCE, tx).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let changed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    #[allow(clippy::disallowed_methods)] // the writer is a std thread, off the runtime
    let writer = {
        let (stop, changed, path) = (stop.clone(), changed.clone(), path.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = if changed.load(std::sync::atomic::Ordering::Relaxed) {
                    SERVICE.replace("web", "api")
                } else {
                    SERVICE.to_string()
                };
                // Written whole and renamed over, as tools that regenerate a file do.
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, text).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    // Reloads keep coming while the writes do.
    for n in 0..2 {
        assert!(
            signalled(&mut rx, Duration::from_millis(1500)).await,
            "no reload {n} during a steady stream of writes"
        );
    }
    changed.store(true, std::sync::atomic::Ordering::Relaxed);
    let t0 = tokio::time::Instant::now();
    let seen = loop {
        assert!(signalled(&mut rx, Duration::from_millis(1500)).await);
        let names: Vec<String> = load_dir(dir.path())
            .unwrap()
            .0
            .services
            .keys()
            .map(|k| k.name.clone())
            .collect();
        if names == ["api"] {
            break t0.elapsed();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "the change was held back"
        );
    };
    assert!(seen < Duration::from_millis(2500), "took {seen:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
}
