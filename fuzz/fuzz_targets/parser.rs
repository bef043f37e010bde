//! The front end never panics, its diagnostics point inside their file, and
//! formatting is idempotent: `fmt(fmt(x)) == fmt(x)` whenever both succeed.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let compilation = phantom_dsl::compile_str("fuzz.yaml", &text);
    assert_eq!(compilation.policy.is_some(), !compilation.has_errors());
    for d in &compilation.diagnostics.items {
        let file = &compilation.sources.get(d.span.file).text;
        let (start, end) = (d.span.start as usize, d.span.end as usize);
        assert!(
            start <= end && end <= file.len() && file.is_char_boundary(start) && file.is_char_boundary(end),
            "{} span {start}..{end} is outside its file or splits a character ({} bytes)",
            d.code,
            file.len()
        );
    }

    // Only syntactically valid text formats; `format_source` says which.
    let Ok(once) = phantom_dsl::format_source("fuzz.yaml", &text) else { return };
    if let Ok(twice) = phantom_dsl::format_source("fuzz.yaml", &once) {
        assert_eq!(once, twice, "formatting is not idempotent");
    }
});
