//! The shape of `src/`, checked: every module imports only modules below it (no import
//! cycles), no source file grows past 800 lines, every file says what lives in it, and the
//! storage-offer endpoint has no stringly-typed errors. ARCHITECTURE.md describes the same
//! layers; a new module must be given a layer here before anything compiles against it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The layers of `src/`, bottom first. A module may import (`crate::…`) modules of lower
/// layers only: never one of its own layer (two surfaces never know each other) nor above.
const LAYERS: &[&[&str]] = &[
    // Leaves every layer may use.
    &["failpoints", "metrics", "keyed_lock", "mount", "listener"],
    // The pure allocation core and the back-end drivers.
    &["offers", "driver"],
    &["store"],
    &["volumes"],
    // Mesos types, JSON, RecordIO, the client that subscribes to a master, agent state.
    &["mesos"],
    &["fencing", "ha"],
    // Surfaces that translate a wire protocol into volume-manager calls.
    &["libstorage", "offer_endpoint", "csi", "broker"],
    // The operator's surface: it also reads the other surfaces' views.
    &["admin"],
    // Composes every owner's config section, loads and cross-checks them.
    &["config"],
    &["server"],
    // The typed admin-API client, and what runs on top of it.
    &["client"],
    &["marathon", "node"],
    &["cli", "fuzzing"],
];

/// Files allowed past the line limit, and why.
const LONG_FILES: &[(&str, &str)] = &[(
    "driver/ebs/fake.rs",
    "the in-process EC2 stand-in the ebs driver's tests and benchmarks run against",
)];

const MAX_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `.rs` file under `src/`, as paths relative to it.
fn files() -> Vec<(String, String)> {
    let mut paths = Vec::new();
    rust_files(&src(), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let rel = p
                .strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            (rel, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

/// The top-level module a file belongs to (`None` for the crate root and the binary).
fn module_of(rel: &str) -> Option<&str> {
    let first = rel.split('/').next().unwrap();
    match first {
        "lib.rs" | "main.rs" => None,
        f => Some(f.strip_suffix(".rs").unwrap_or(f)),
    }
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Source text without comments and string literals (doc comments name modules freely).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' && (i == 0 || b[i - 1] != b'\'') {
            let raw_hashes = raw_prefix(b, i);
            out.push('"');
            i += 1;
            loop {
                if i >= b.len() {
                    break;
                }
                if raw_hashes.is_none() && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i] == b'"' {
                    let hashes = raw_hashes.unwrap_or(0);
                    if b[i + 1..].iter().take(hashes).all(|&c| c == b'#') && b.len() > i + hashes {
                        i += 1 + hashes;
                        break;
                    }
                }
                if b[i] == b'\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push('"');
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// For a `"` at `i`: `Some(n)` if it opens a raw string `r#…#"` with n hashes.
fn raw_prefix(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut hashes = 0;
    while j > 0 && b[j - 1] == b'#' {
        hashes += 1;
        j -= 1;
    }
    (j > 0 && b[j - 1] == b'r' && (j < 2 || !b[j - 2].is_ascii_alphanumeric())).then_some(hashes)
}

/// The top-level modules a file's code names through `crate::`, with the line of each.
fn imports(code: &str) -> Vec<(String, usize)> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let line_at = |pos: usize| code[..pos].matches('\n').count() + 1;
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("crate::") {
        let pos = from + at + "crate::".len();
        from = pos;
        let rest = &code[pos..];
        let Some(group) = rest.strip_prefix('{') else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push((name, line_at(pos)));
            }
            continue;
        };
        // `crate::{a::b, c::{d, e}}`: the first name of each item at the group's top level.
        let mut depth = 0;
        let mut item_start = true;
        for (k, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && (c.is_alphabetic() || c == '_') => {
                    out.push((ident(&group[k..]), line_at(pos + 1 + k)));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    out
}

#[test]
fn every_module_imports_only_layers_below_it() {
    let mut broken = Vec::new();
    let mut unplaced = BTreeMap::new();
    for (rel, text) in files() {
        let Some(module) = module_of(&rel) else {
            continue;
        };
        let Some(layer) = layer_of(module) else {
            unplaced.insert(module.to_string(), rel.clone());
            continue;
        };
        for (target, line) in imports(&code_only(&text)) {
            if target == module {
                continue;
            }
            match layer_of(&target) {
                Some(t) if t < layer => {}
                Some(_) => broken.push(format!(
                    "src/{rel}:{line}: `{module}` (layer {layer}) imports `{target}` (layer {})",
                    layer_of(&target).unwrap()
                )),
                None => broken.push(format!(
                    "src/{rel}:{line}: `{module}` imports `{target}`, which has no layer"
                )),
            }
        }
    }
    assert!(
        unplaced.is_empty(),
        "modules with no layer in tests/layout.rs (give each one): {unplaced:?}"
    );
    assert!(
        broken.is_empty(),
        "imports that go sideways or up:\n{}",
        broken.join("\n")
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let mut long = Vec::new();
    for (rel, text) in files() {
        let lines = text.lines().count();
        let unit_tests = rel.ends_with("/tests.rs") || rel == "tests.rs";
        let exempt = LONG_FILES.iter().any(|(f, _)| *f == rel);
        if lines > MAX_LINES && !unit_tests && !exempt {
            long.push(format!("src/{rel}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines (split them by concern):\n{}",
        long.join("\n")
    );
}

#[test]
fn every_source_file_says_what_lives_in_it() {
    let missing: Vec<String> = files()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(rel, _)| format!("src/{rel}"))
        .collect();
    assert!(missing.is_empty(), "files with no `//!` line: {missing:?}");
}

/// The second type argument of every `Result<…>` in `code` that has two.
fn result_error_types(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("Result<") {
        let before = &rest[..at];
        rest = &rest[at + "Result<".len()..];
        if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `StoreResult<`, `SomeResult<`: not `Result` itself.
        }
        let mut depth = 0;
        let mut args = vec![String::new()];
        for c in rest.chars() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' | ')' | ']' if depth == 0 => break,
                '>' | ')' | ']' => depth -= 1,
                ',' if depth == 0 => {
                    args.push(String::new());
                    continue;
                }
                _ => {}
            }
            args.last_mut().unwrap().push(c);
        }
        if let Some(e) = args.get(1) {
            out.push(e.split_whitespace().collect());
        }
    }
    out
}

#[test]
fn the_offer_endpoint_has_no_string_errors() {
    let mut found = Vec::new();
    let mut read = 0;
    for (rel, text) in files() {
        if module_of(&rel) != Some("offer_endpoint") {
            continue;
        }
        read += 1;
        let code = code_only(&text);
        for e in result_error_types(&code) {
            if e == "String" || e == "std::string::String" || e == "(String,String)" {
                found.push(format!("src/{rel}: Result<_, {e}>"));
            }
        }
        if code.contains("map_err(|e| e.to_string())") {
            found.push(format!("src/{rel}: map_err(|e| e.to_string())"));
        }
    }
    assert!(read > 0, "no src/offer_endpoint/ to read");
    assert!(found.is_empty(), "stringly-typed errors: {found:?}");
}

#[test]
fn the_checks_themselves_see_what_they_look_for() {
    // The scanners must find what they are meant to find, or the tests above pass on nothing.
    let code = code_only(
        "use crate::{store::{Op, Store}, volumes};\n// crate::cli in a comment\nlet s = \"crate::server\";\nfn f() -> Result<u8, String> { crate::driver::x() }\nfn g() -> Result<Vec<String>, Error> {}\n",
    );
    let names: Vec<String> = imports(&code).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["store", "volumes", "driver"]);
    assert_eq!(result_error_types(&code), ["String", "Error"]);
    assert_eq!(module_of("volumes/attach.rs"), Some("volumes"));
    assert_eq!(module_of("keyed_lock.rs"), Some("keyed_lock"));
    assert!(layer_of("store") < layer_of("volumes"));
}
