//! The strict XML parser and exclusive c14n (xml-exc-c14n). Besides "no panic", two properties:
//! the canonical form of anything we accept is itself acceptable XML, and canonicalizing it again
//! gives the same octets (c14n is idempotent). A break in either would mean a digest we compute can
//! differ from the one another implementation computes over the same document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tessera::saml::xml::{parse, Limits};
use tessera::saml::xmldsig::c14n::{canonicalize, Options};

fuzz_target!(|data: &[u8]| {
    let Ok(root) = parse(data, &Limits::default()) else {
        return;
    };
    let first = canonicalize(&root, &Options::default());
    let reparsed = match parse(
        &first,
        &Limits {
            max_bytes: usize::MAX,
            ..Limits::default()
        },
    ) {
        Ok(e) => e,
        Err(e) => panic!(
            "canonical form does not parse: {e}\n{}",
            String::from_utf8_lossy(&first)
        ),
    };
    let second = canonicalize(&reparsed, &Options::default());
    assert_eq!(
        String::from_utf8_lossy(&first),
        String::from_utf8_lossy(&second),
        "c14n is not idempotent"
    );
    // Serializing the tree must also give back the same tree's canonical form.
    let serialized = root.to_xml();
    if let Ok(again) = parse(
        serialized.as_bytes(),
        &Limits {
            max_bytes: usize::MAX,
            ..Limits::default()
        },
    ) {
        assert_eq!(
            String::from_utf8_lossy(&canonicalize(&again, &Options::default())),
            String::from_utf8_lossy(&first),
            "to_xml changes the canonical form"
        );
    } else {
        panic!("to_xml output does not parse: {serialized}");
    }
});
