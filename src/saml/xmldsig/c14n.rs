//! Exclusive XML Canonicalization 1.0 without comments (xml-exc-c14n), over the tree of [`crate::saml::xml`].
//!
//! This is our own code, not a library's, because what we sign and what we check must be byte-exact and
//! must operate on the very tree the rest of Tessera reads: verifying one parse and using another is how
//! signature-wrapping attacks work.

use crate::saml::xml::{escape_text, Element, Node, NsDecl, XML_NS};

/// What to canonicalize besides the element itself.
#[derive(Debug, Default, Clone)]
pub struct Options<'a> {
    /// An element left out of the output: the Signature being verified or created, which is what the
    /// enveloped-signature transform removes (xmldsig-core 6.6.4). Matched by identity, not by value.
    pub exclude: Option<&'a Element>,
    /// The InclusiveNamespaces PrefixList (xml-exc-c14n 3): prefixes treated as in inclusive c14n. The
    /// token `#default` stands for the default namespace.
    pub inclusive_prefixes: Vec<String>,
    /// Namespace declarations in scope at the element's parent, outermost first. Only needed for
    /// inclusive prefixes, which can name a namespace declared on an ancestor.
    pub inherited: Vec<NsDecl>,
}

/// The canonical octets of `element` and its subtree.
pub fn canonicalize(element: &Element, options: &Options<'_>) -> Vec<u8> {
    let mut out = String::with_capacity(2048);
    let mut scope: Vec<NsDecl> = options.inherited.clone();
    let mut rendered: Vec<NsDecl> = Vec::new();
    write_element(element, options, &mut scope, &mut rendered, &mut out);
    out.into_bytes()
}

/// The namespace declarations in scope at `target`'s parent, when `target` lies inside `root`.
/// Returns None when `target` is not in the tree.
pub fn inherited_namespaces(root: &Element, target: &Element) -> Option<Vec<NsDecl>> {
    fn walk(node: &Element, target: &Element, scope: &mut Vec<NsDecl>) -> bool {
        if std::ptr::eq(node, target) {
            return true;
        }
        let mark = scope.len();
        scope.extend(node.ns_decls.iter().cloned());
        for child in node.elements() {
            if walk(child, target, scope) {
                return true;
            }
        }
        scope.truncate(mark);
        false
    }
    let mut scope = Vec::new();
    walk(root, target, &mut scope).then_some(scope)
}

fn lookup<'a>(decls: &'a [NsDecl], prefix: Option<&str>) -> Option<&'a NsDecl> {
    decls.iter().rev().find(|d| d.prefix.as_deref() == prefix)
}

fn write_element(
    element: &Element,
    options: &Options<'_>,
    scope: &mut Vec<NsDecl>,
    rendered: &mut Vec<NsDecl>,
    out: &mut String,
) {
    let scope_mark = scope.len();
    scope.extend(element.ns_decls.iter().cloned());
    let rendered_mark = rendered.len();

    // xml-exc-c14n 3: a namespace node is output if it is visibly utilized by the element (its own
    // prefix, or the prefix of one of its attributes) or its prefix is in the InclusiveNamespaces list,
    // and the nearest output ancestor did not already render the same binding.
    let mut needed: Vec<NsDecl> = Vec::new();
    let mut want = |prefix: Option<&str>, uri: &str| {
        if prefix == Some("xml") || needed.iter().any(|d| d.prefix.as_deref() == prefix) {
            return;
        }
        let already = lookup(rendered, prefix).map(|d| d.uri.as_str());
        let unchanged = match already {
            Some(u) => u == uri,
            // An empty default namespace needs no declaration unless an output ancestor set one.
            None => uri.is_empty(),
        };
        if !unchanged {
            needed.push(NsDecl {
                prefix: prefix.map(str::to_owned),
                uri: uri.to_owned(),
            });
        }
    };
    want(
        element.prefix.as_deref(),
        element.namespace.as_deref().unwrap_or(""),
    );
    for attr in &element.attributes {
        if let (Some(p), Some(uri)) = (&attr.prefix, &attr.namespace) {
            want(Some(p), uri);
        }
    }
    for token in &options.inclusive_prefixes {
        let prefix = (token != "#default").then_some(token.as_str());
        if let Some(decl) = lookup(scope, prefix) {
            let uri = decl.uri.clone();
            want(prefix, &uri);
        }
    }
    // Namespace nodes sort by local name, so the default namespace (empty local name) comes first.
    needed.sort_by(|a, b| a.prefix.cmp(&b.prefix));

    out.push('<');
    push_qname(out, element.prefix.as_deref(), &element.local);
    for decl in &needed {
        match &decl.prefix {
            Some(p) => {
                out.push_str(" xmlns:");
                out.push_str(p);
            }
            None => out.push_str(" xmlns"),
        }
        out.push_str("=\"");
        escape_attr_c14n(out, &decl.uri);
        out.push('"');
    }
    rendered.extend(needed);

    // c14n 2.2 (inherited by xml-exc-c14n): attributes sort by namespace URI, then local name; an
    // attribute in no namespace has an empty URI and so comes first.
    let mut attrs: Vec<_> = element.attributes.iter().collect();
    attrs.sort_by(|a, b| {
        (a.namespace.as_deref().unwrap_or(""), a.local.as_str())
            .cmp(&(b.namespace.as_deref().unwrap_or(""), b.local.as_str()))
    });
    for attr in attrs {
        out.push(' ');
        let prefix = match attr.namespace.as_deref() {
            Some(XML_NS) => Some("xml"),
            _ => attr.prefix.as_deref(),
        };
        push_qname(out, prefix, &attr.local);
        out.push_str("=\"");
        escape_attr_c14n(out, &attr.value);
        out.push('"');
    }
    out.push('>');

    for child in &element.children {
        match child {
            Node::Element(e) => {
                if options.exclude.is_some_and(|x| std::ptr::eq(x, e)) {
                    continue;
                }
                write_element(e, options, scope, rendered, out);
            }
            // c14n 1.0 section 2.3, text nodes: `&`, `<`, `>` and carriage return are replaced, exactly
            // as our writer escapes text.
            Node::Text(t) => escape_text(out, t),
            // Canonical XML without comments drops them.
            Node::Comment(_) => {}
        }
    }

    out.push_str("</");
    push_qname(out, element.prefix.as_deref(), &element.local);
    out.push('>');
    rendered.truncate(rendered_mark);
    scope.truncate(scope_mark);
}

fn push_qname(out: &mut String, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

/// c14n 1.0 section 2.3, attribute nodes: `&`, `<`, `"`, tab, newline and carriage return are replaced,
/// and `>` is not.
fn escape_attr_c14n(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#x9;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::saml::xml::{parse, Limits};

    fn c14n(xml: &str) -> String {
        let e = parse(xml.as_bytes(), &Limits::default()).unwrap();
        String::from_utf8(canonicalize(&e, &Options::default())).unwrap()
    }

    #[test]
    fn drops_unused_namespaces_and_sorts_attributes() {
        assert_eq!(
            c14n(r#"<a:r xmlns:b="urn:b" xmlns:a="urn:a" z="1" b:y="2" a="3"><a:c/></a:r>"#),
            r#"<a:r xmlns:a="urn:a" xmlns:b="urn:b" a="3" z="1" b:y="2"><a:c></a:c></a:r>"#
        );
    }

    #[test]
    fn renders_namespaces_where_used_in_a_subtree() {
        let doc = parse(
            br#"<p:Response xmlns:p="urn:p" xmlns:s="urn:s"><s:Assertion ID="a"><s:Issuer>i</s:Issuer></s:Assertion></p:Response>"#,
            &Limits::default(),
        )
        .unwrap();
        let assertion = doc.elements().next().unwrap();
        let out = String::from_utf8(canonicalize(assertion, &Options::default())).unwrap();
        assert_eq!(
            out,
            r#"<s:Assertion xmlns:s="urn:s" ID="a"><s:Issuer>i</s:Issuer></s:Assertion>"#
        );
    }

    #[test]
    fn default_namespace_is_undeclared_when_needed() {
        assert_eq!(
            c14n(r#"<r xmlns="urn:d"><c xmlns=""/></r>"#),
            r#"<r xmlns="urn:d"><c xmlns=""></c></r>"#
        );
        assert_eq!(c14n(r#"<r><c xmlns=""/></r>"#), r#"<r><c></c></r>"#);
    }

    #[test]
    fn escapes_and_drops_comments() {
        assert_eq!(
            c14n("<r a=\"&lt;&gt;&quot;&#9;&#10;&#13;\">&lt;&gt;&amp;&#13;<!-- c --></r>"),
            "<r a=\"&lt;>&quot;&#x9;&#xA;&#xD;\">&lt;&gt;&amp;&#xD;</r>"
        );
    }

    #[test]
    fn inclusive_prefixes_pull_in_ancestor_declarations() {
        let doc = parse(
            br#"<r xmlns:xs="urn:xs" xmlns:u="urn:u"><c/></r>"#,
            &Limits::default(),
        )
        .unwrap();
        let c = doc.elements().next().unwrap();
        let options = Options {
            inclusive_prefixes: vec!["xs".into()],
            inherited: inherited_namespaces(&doc, c).unwrap(),
            ..Options::default()
        };
        assert_eq!(
            String::from_utf8(canonicalize(c, &options)).unwrap(),
            r#"<c xmlns:xs="urn:xs"></c>"#
        );
    }

    #[test]
    fn excludes_the_enveloped_signature() {
        let doc = parse(br#"<r ID="1"><Signature/><b/></r>"#, &Limits::default()).unwrap();
        let sig = doc.elements().next().unwrap();
        let options = Options {
            exclude: Some(sig),
            ..Options::default()
        };
        assert_eq!(
            String::from_utf8(canonicalize(&doc, &options)).unwrap(),
            r#"<r ID="1"><b></b></r>"#
        );
    }
}
