//! P0210: an exec allow-list without a dynamic loader cannot start a
//! dynamically linked program (the kernel opens the loader for exec too).

fn codes(text: &str) -> Vec<&'static str> {
    let c = phantom_dsl::compile_str("p.yaml", text);
    assert!(!c.has_errors(), "{text}\n{:#?}", c.diagnostics);
    c.diagnostics.items.iter().map(|d| d.code).collect()
}

#[test]
fn an_exec_list_without_a_loader_is_warned_about() {
    let text = "profile: t\nexec:\n  allow: [/usr/bin/python3, /usr/bin/git]\n";
    assert_eq!(codes(text), ["P0210"]);
    let c = phantom_dsl::compile_str("p.yaml", text);
    let d = &c.diagnostics.items[0];
    assert_eq!(
        &text[d.span.start as usize..d.span.end as usize],
        "/usr/bin/python3",
        "the warning points at the list's first entry"
    );
}

#[test]
fn a_loader_by_path_directory_or_prefix_glob_satisfies_it() {
    for entry in [
        "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2",
        "/usr/lib64/ld-linux-x86-64.so.2",
        "/usr/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1",
        "/lib/ld-musl-x86_64.so.1",
        "/usr/lib/x86_64-linux-gnu/ld-linux*",
        "/usr/lib",
    ] {
        let text = format!("profile: t\nexec:\n  allow: [/usr/bin/python3, {entry}]\n");
        assert_eq!(codes(&text), Vec::<&str>::new(), "{entry}");
    }
}

#[test]
fn no_exec_section_or_an_empty_list_gets_no_warning() {
    assert_eq!(codes("profile: t\n"), Vec::<&str>::new());
    assert_eq!(codes("profile: t\nexec:\n  allow: []\n"), Vec::<&str>::new());
}
