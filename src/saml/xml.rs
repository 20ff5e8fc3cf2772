//! A small, strict XML tree for SAML messages.
//!
//! Every message Tessera receives is parsed into this tree and every message it sends is built as one, so
//! there is exactly one place that decides what XML we accept and one place that escapes what we write.
//! The parser is deliberately narrow: UTF-8 only, no DTD (and so no entity declarations, XXE or billion
//! laughs), no processing instructions, bounded size, depth and element count. Namespaces are resolved at
//! parse time and kept next to the prefixes as written, because exclusive canonicalization needs both.

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// The namespace bound to the `xml` prefix by definition (Namespaces in XML 1.0, section 3).
pub const XML_NS: &str = "http://www.w3.org/XML/1998/namespace";

/// Namespace URIs used across the SAML modules.
pub mod ns {
    /// saml-core 2.1: the assertion namespace.
    pub const SAML: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
    /// saml-core 3.1: the protocol namespace.
    pub const SAMLP: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
    /// saml-metadata 2.1: the metadata namespace.
    pub const MD: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
    /// xmldsig-core 4: XML Signature.
    pub const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
    /// xmlenc-core 3: XML Encryption.
    pub const XENC: &str = "http://www.w3.org/2001/04/xmlenc#";
    /// xmlenc-core1 5.5: XML Encryption 1.1 (MGF algorithms).
    pub const XENC11: &str = "http://www.w3.org/2009/xmlenc11#";
    /// XML Schema instance, for `xsi:type` on attribute values.
    pub const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";
    /// XML Schema, for `xs:string`.
    pub const XS: &str = "http://www.w3.org/2001/XMLSchema";
    /// xml-exc-c14n 3: the namespace of `InclusiveNamespaces`.
    pub const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
}

/// Why a document was refused. Each variant names one rule so that tests and logs can tell them apart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("document is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("document is not UTF-8")]
    NotUtf8,
    #[error("document type declarations (DTD) are not accepted")]
    Dtd,
    #[error("processing instructions are not accepted")]
    ProcessingInstruction,
    #[error("elements nest deeper than {0}")]
    TooDeep(usize),
    #[error("more than {0} elements")]
    TooManyElements(usize),
    #[error("namespace prefix `{0}` is not declared")]
    UnboundPrefix(String),
    #[error("attribute `{0}` appears twice")]
    DuplicateAttribute(String),
    #[error("no root element")]
    NoRoot,
    #[error("content after the root element")]
    ContentAfterRoot,
    #[error("element <{0}> must hold only text, without comments or child elements")]
    MixedContent(String),
    #[error("malformed XML: {0}")]
    Malformed(String),
}

/// Bounds applied while parsing, before anything is allocated for content beyond them.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest document accepted, in bytes.
    pub max_bytes: usize,
    /// Deepest element nesting; SAML messages are shallow, so a deep document is an attack.
    pub max_depth: usize,
    /// Most elements in one document.
    pub max_elements: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bytes: 256 * 1024,
            max_depth: 48,
            max_elements: 10_000,
        }
    }
}

/// One namespace declaration written on an element (`xmlns:p="uri"`, or `xmlns="uri"` when `prefix` is
/// None). Kept because canonicalization and serialization need to know where declarations stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NsDecl {
    pub prefix: Option<String>,
    pub uri: String,
}

/// An attribute with its prefix as written and its resolved namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// Prefix as written; None for an unqualified attribute (which has no namespace).
    pub prefix: Option<String>,
    pub local: String,
    /// The namespace the prefix resolved to.
    pub namespace: Option<String>,
    /// The normalized, unescaped value.
    pub value: String,
}

/// A child of an element. Comments are kept so that text reads can refuse them (a comment inside a
/// NameID is a known way to make two parsers disagree) and canonicalization can drop them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Element(Element),
    Text(String),
    Comment(String),
}

/// An element with resolved names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Prefix as written, None for the default namespace.
    pub prefix: Option<String>,
    pub local: String,
    /// Resolved namespace URI; None when the element is in no namespace.
    pub namespace: Option<String>,
    /// Declarations written on this element, in document order.
    pub ns_decls: Vec<NsDecl>,
    pub attributes: Vec<Attribute>,
    pub children: Vec<Node>,
}

/// Parses a whole document strictly. See the module documentation for what is refused.
pub fn parse(input: &[u8], limits: &Limits) -> Result<Element, Error> {
    if input.len() > limits.max_bytes {
        return Err(Error::TooLarge {
            size: input.len(),
            limit: limits.max_bytes,
        });
    }
    let text = std::str::from_utf8(input).map_err(|_| Error::NotUtf8)?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().trim_text(false);
    reader.config_mut().check_end_names = true;

    let mut stack: Vec<Element> = Vec::new();
    let mut scopes: Vec<Vec<NsDecl>> = Vec::new();
    let mut root: Option<Element> = None;
    let mut elements = 0usize;
    let mut seen_anything = false;

    loop {
        let event = reader
            .read_event()
            .map_err(|e| Error::Malformed(e.to_string()))?;
        let first = !seen_anything;
        seen_anything = true;
        match event {
            Event::Decl(_) if first => {}
            Event::Decl(_) => return Err(Error::Malformed("misplaced XML declaration".into())),
            Event::DocType(_) => return Err(Error::Dtd),
            Event::PI(_) => return Err(Error::ProcessingInstruction),
            Event::Start(_) | Event::Empty(_) if root.is_some() => {
                return Err(Error::ContentAfterRoot)
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                elements += 1;
                if elements > limits.max_elements {
                    return Err(Error::TooManyElements(limits.max_elements));
                }
                if stack.len() >= limits.max_depth {
                    return Err(Error::TooDeep(limits.max_depth));
                }
                let element = open_element(start, &mut scopes)?;
                if matches!(event, Event::Start(_)) {
                    stack.push(element);
                } else {
                    scopes.pop();
                    attach(element, &mut stack, &mut root);
                }
            }
            Event::End(_) => {
                scopes.pop();
                let element = stack
                    .pop()
                    .ok_or_else(|| Error::Malformed("unexpected end tag".into()))?;
                attach(element, &mut stack, &mut root);
            }
            Event::Text(t) => {
                let raw = std::str::from_utf8(t.as_ref()).map_err(|_| Error::NotUtf8)?;
                let normalized = normalize_line_ends(raw);
                let value = quick_xml::escape::unescape(&normalized)
                    .map_err(|e| Error::Malformed(e.to_string()))?
                    .into_owned();
                match stack.last_mut() {
                    Some(parent) => push_text(parent, value),
                    None if value.trim_matches(is_xml_space).is_empty() => {}
                    None => return Err(Error::Malformed("text outside the root element".into())),
                }
            }
            Event::CData(t) => {
                let raw = std::str::from_utf8(t.as_ref()).map_err(|_| Error::NotUtf8)?;
                match stack.last_mut() {
                    Some(parent) => push_text(parent, normalize_line_ends(raw)),
                    None => return Err(Error::Malformed("CDATA outside the root element".into())),
                }
            }
            Event::Comment(t) => {
                if let Some(parent) = stack.last_mut() {
                    let raw = std::str::from_utf8(t.as_ref()).map_err(|_| Error::NotUtf8)?;
                    parent.children.push(Node::Comment(raw.to_owned()));
                }
            }
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(Error::Malformed("unclosed element".into()));
    }
    root.ok_or(Error::NoRoot)
}

fn is_xml_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// XML 1.0 section 2.11: CRLF and lone CR become LF before anything else sees the text.
fn normalize_line_ends(raw: &str) -> String {
    if raw.contains('\r') {
        raw.replace("\r\n", "\n").replace('\r', "\n")
    } else {
        raw.to_owned()
    }
}

fn push_text(parent: &mut Element, value: String) {
    if let Some(Node::Text(previous)) = parent.children.last_mut() {
        previous.push_str(&value);
    } else {
        parent.children.push(Node::Text(value));
    }
}

fn attach(element: Element, stack: &mut [Element], root: &mut Option<Element>) {
    match stack.last_mut() {
        Some(parent) => parent.children.push(Node::Element(element)),
        None => *root = Some(element),
    }
}

fn split_qname(qname: &str) -> Result<(Option<&str>, &str), Error> {
    match qname.split_once(':') {
        Some((prefix, local))
            if !prefix.is_empty() && !local.is_empty() && !local.contains(':') =>
        {
            Ok((Some(prefix), local))
        }
        Some(_) => Err(Error::Malformed(format!("bad qualified name `{qname}`"))),
        None if qname.is_empty() => Err(Error::Malformed("empty name".into())),
        None => Ok((None, qname)),
    }
}

fn resolve(scopes: &[Vec<NsDecl>], prefix: Option<&str>) -> Option<String> {
    if prefix == Some("xml") {
        return Some(XML_NS.to_owned());
    }
    for scope in scopes.iter().rev() {
        for decl in scope.iter().rev() {
            if decl.prefix.as_deref() == prefix {
                // `xmlns=""` undeclares the default namespace (Namespaces in XML 1.0, 6.2).
                return if decl.uri.is_empty() {
                    None
                } else {
                    Some(decl.uri.clone())
                };
            }
        }
    }
    None
}

fn open_element(start: &BytesStart<'_>, scopes: &mut Vec<Vec<NsDecl>>) -> Result<Element, Error> {
    let qname = std::str::from_utf8(start.name().as_ref())
        .map_err(|_| Error::NotUtf8)?
        .to_owned();
    let mut decls = Vec::new();
    let mut raw_attrs = Vec::new();
    for attr in start.attributes() {
        let attr = attr.map_err(|e| Error::Malformed(e.to_string()))?;
        let key = std::str::from_utf8(attr.key.as_ref())
            .map_err(|_| Error::NotUtf8)?
            .to_owned();
        let raw = std::str::from_utf8(&attr.value).map_err(|_| Error::NotUtf8)?;
        if raw.contains('<') {
            return Err(Error::Malformed(format!(
                "`<` in the value of attribute `{key}`"
            )));
        }
        // XML 1.0 3.3.3: literal whitespace characters in attribute values become spaces; character
        // references to them survive.
        let normalized = normalize_line_ends(raw).replace(['\t', '\n'], " ");
        let value = quick_xml::escape::unescape(&normalized)
            .map_err(|e| Error::Malformed(e.to_string()))?
            .into_owned();
        if key == "xmlns" {
            decls.push(NsDecl {
                prefix: None,
                uri: value,
            });
        } else if let Some(prefix) = key.strip_prefix("xmlns:") {
            if value.is_empty() {
                return Err(Error::Malformed(format!(
                    "prefix `{prefix}` bound to an empty namespace"
                )));
            }
            decls.push(NsDecl {
                prefix: Some(prefix.to_owned()),
                uri: value,
            });
        } else {
            raw_attrs.push((key, value));
        }
    }
    scopes.push(decls.clone());

    let (prefix, local) = split_qname(&qname)?;
    let namespace = resolve(scopes, prefix);
    if let (Some(p), None) = (prefix, &namespace) {
        return Err(Error::UnboundPrefix(p.to_owned()));
    }
    let mut attributes: Vec<Attribute> = Vec::with_capacity(raw_attrs.len());
    for (key, value) in raw_attrs {
        let (prefix, local) = split_qname(&key)?;
        // Namespaces in XML 1.0, 6.2: unprefixed attributes are in no namespace.
        let namespace = match prefix {
            Some(p) => {
                Some(resolve(scopes, Some(p)).ok_or_else(|| Error::UnboundPrefix(p.to_owned()))?)
            }
            None => None,
        };
        if attributes
            .iter()
            .any(|a| a.local == local && a.namespace == namespace)
        {
            return Err(Error::DuplicateAttribute(key));
        }
        attributes.push(Attribute {
            prefix: prefix.map(str::to_owned),
            local: local.to_owned(),
            namespace,
            value,
        });
    }
    Ok(Element {
        prefix: prefix.map(str::to_owned),
        local: local.to_owned(),
        namespace,
        ns_decls: decls,
        attributes,
        children: Vec::new(),
    })
}

impl Element {
    /// A new element in namespace `namespace`, written with `prefix` ("" for none). The caller declares
    /// the prefix where it should appear with [`Element::declare`].
    pub fn new(prefix: &str, local: &str, namespace: &str) -> Element {
        Element {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            local: local.to_owned(),
            namespace: (!namespace.is_empty()).then(|| namespace.to_owned()),
            ns_decls: Vec::new(),
            attributes: Vec::new(),
            children: Vec::new(),
        }
    }

    /// Adds a namespace declaration on this element.
    pub fn declare(mut self, prefix: &str, uri: &str) -> Element {
        self.ns_decls.push(NsDecl {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            uri: uri.to_owned(),
        });
        self
    }

    /// Adds an unqualified attribute.
    pub fn with_attr(mut self, local: &str, value: impl Into<String>) -> Element {
        self.set_attr(local, value);
        self
    }

    /// Adds an attribute only when there is a value.
    pub fn with_opt_attr(self, local: &str, value: Option<impl Into<String>>) -> Element {
        match value {
            Some(v) => self.with_attr(local, v),
            None => self,
        }
    }

    /// Adds a namespaced attribute such as `xsi:type`.
    pub fn with_ns_attr(
        mut self,
        prefix: &str,
        local: &str,
        namespace: &str,
        value: impl Into<String>,
    ) -> Element {
        self.attributes.push(Attribute {
            prefix: Some(prefix.to_owned()),
            local: local.to_owned(),
            namespace: Some(namespace.to_owned()),
            value: value.into(),
        });
        self
    }

    /// Sets (or replaces) an unqualified attribute.
    pub fn set_attr(&mut self, local: &str, value: impl Into<String>) {
        let value = value.into();
        match self
            .attributes
            .iter_mut()
            .find(|a| a.namespace.is_none() && a.local == local)
        {
            Some(existing) => existing.value = value,
            None => self.attributes.push(Attribute {
                prefix: None,
                local: local.to_owned(),
                namespace: None,
                value,
            }),
        }
    }

    pub fn with_child(mut self, child: Element) -> Element {
        self.children.push(Node::Element(child));
        self
    }

    pub fn with_children(mut self, children: impl IntoIterator<Item = Element>) -> Element {
        self.children
            .extend(children.into_iter().map(Node::Element));
        self
    }

    pub fn with_text(mut self, text: impl Into<String>) -> Element {
        self.children.push(Node::Text(text.into()));
        self
    }

    /// True when this element has the given namespace and local name.
    pub fn is(&self, namespace: &str, local: &str) -> bool {
        self.local == local && self.namespace.as_deref() == Some(namespace)
    }

    /// The value of an unqualified attribute.
    pub fn attr(&self, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.is_none() && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// The value of a namespaced attribute.
    pub fn attr_ns(&self, namespace: &str, local: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|a| a.namespace.as_deref() == Some(namespace) && a.local == local)
            .map(|a| a.value.as_str())
    }

    /// Direct child elements, skipping text and comments.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// Direct child elements, mutably.
    pub fn elements_mut(&mut self) -> impl Iterator<Item = &mut Element> {
        self.children.iter_mut().filter_map(|n| match n {
            Node::Element(e) => Some(e),
            _ => None,
        })
    }

    /// The first direct child with this name.
    pub fn child(&self, namespace: &str, local: &str) -> Option<&Element> {
        self.elements().find(|e| e.is(namespace, local))
    }

    /// Every direct child with this name.
    pub fn children_named<'a>(
        &'a self,
        namespace: &'a str,
        local: &'a str,
    ) -> impl Iterator<Item = &'a Element> {
        self.elements().filter(move |e| e.is(namespace, local))
    }

    /// This element and all its descendants, depth first in document order.
    pub fn descendants(&self) -> Vec<&Element> {
        let mut out = Vec::new();
        let mut pending = vec![self];
        while let Some(e) = pending.pop() {
            out.push(e);
            let kids: Vec<&Element> = e.elements().collect();
            pending.extend(kids.into_iter().rev());
        }
        out
    }

    /// The text of an element that must hold only text. A comment or a child element is refused rather
    /// than skipped: `<NameID>admin<!---->@evil</NameID>` must not read as two different users to two
    /// different parsers.
    pub fn text(&self) -> Result<String, Error> {
        let mut out = String::new();
        for child in &self.children {
            match child {
                Node::Text(t) => out.push_str(t),
                _ => return Err(Error::MixedContent(self.local.clone())),
            }
        }
        Ok(out)
    }

    /// [`Element::text`] with surrounding XML whitespace removed, for values like entity IDs and URIs.
    pub fn trimmed_text(&self) -> Result<String, Error> {
        Ok(self.text()?.trim_matches(is_xml_space).to_owned())
    }

    /// Serializes the element. Text and attribute values are always escaped, so a value can never become
    /// markup.
    pub fn to_xml(&self) -> String {
        let mut out = String::with_capacity(1024);
        self.write(&mut out);
        out
    }

    fn write(&self, out: &mut String) {
        out.push('<');
        write_qname(out, self.prefix.as_deref(), &self.local);
        for decl in &self.ns_decls {
            match &decl.prefix {
                Some(p) => {
                    out.push_str(" xmlns:");
                    out.push_str(p);
                }
                None => out.push_str(" xmlns"),
            }
            out.push_str("=\"");
            escape_attr(out, &decl.uri);
            out.push('"');
        }
        for attr in &self.attributes {
            out.push(' ');
            write_qname(out, attr.prefix.as_deref(), &attr.local);
            out.push_str("=\"");
            escape_attr(out, &attr.value);
            out.push('"');
        }
        if self.children.is_empty() {
            out.push_str("/>");
            return;
        }
        out.push('>');
        for child in &self.children {
            match child {
                Node::Element(e) => e.write(out),
                Node::Text(t) => escape_text(out, t),
                Node::Comment(c) => {
                    out.push_str("<!--");
                    out.push_str(c);
                    out.push_str("-->");
                }
            }
        }
        out.push_str("</");
        write_qname(out, self.prefix.as_deref(), &self.local);
        out.push('>');
    }
}

fn write_qname(out: &mut String, prefix: Option<&str>, local: &str) {
    if let Some(p) = prefix {
        out.push_str(p);
        out.push(':');
    }
    out.push_str(local);
}

/// Escapes character data. `>` is escaped too, so `]]>` can never appear.
pub fn escape_text(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\r' => out.push_str("&#xD;"),
            _ => out.push(c),
        }
    }
}

/// Escapes an attribute value for a double-quoted attribute. Whitespace characters are written as
/// references so they survive attribute-value normalization.
pub fn escape_attr(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
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

    fn p(s: &str) -> Result<Element, Error> {
        parse(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn resolves_namespaces_and_attributes() {
        let e = p(r#"<?xml version="1.0"?><a:R xmlns:a="urn:a" xmlns="urn:d" ID="x"><C a:k="v">t&amp;u</C></a:R>"#)
            .unwrap();
        assert!(e.is("urn:a", "R"));
        assert_eq!(e.attr("ID"), Some("x"));
        let c = e.child("urn:d", "C").unwrap();
        assert_eq!(c.attr_ns("urn:a", "k"), Some("v"));
        assert_eq!(c.text().unwrap(), "t&u");
    }

    #[test]
    fn refuses_dtd_and_entities() {
        let laughs = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><lolz>&lol2;</lolz>"#;
        assert_eq!(p(laughs), Err(Error::Dtd));
        let xxe = r#"<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>"#;
        assert_eq!(p(xxe), Err(Error::Dtd));
        assert!(matches!(p("<r>&x;</r>"), Err(Error::Malformed(_))));
    }

    #[test]
    fn refuses_processing_instructions_and_extra_roots() {
        assert_eq!(p("<r><?evil x?></r>"), Err(Error::ProcessingInstruction));
        assert_eq!(p("<r/><s/>"), Err(Error::ContentAfterRoot));
        assert_eq!(p("   "), Err(Error::NoRoot));
    }

    #[test]
    fn refuses_unbound_prefix_and_duplicate_attributes() {
        assert_eq!(p("<x:r/>"), Err(Error::UnboundPrefix("x".into())));
        assert!(matches!(
            p(r#"<r a="1" a="2"/>"#),
            Err(Error::Malformed(_)) | Err(Error::DuplicateAttribute(_))
        ));
        assert_eq!(
            p(r#"<r xmlns:a="urn:x" xmlns:b="urn:x" a:k="1" b:k="2"/>"#),
            Err(Error::DuplicateAttribute("b:k".into()))
        );
    }

    #[test]
    fn enforces_limits() {
        let limits = Limits {
            max_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            parse(b"<r>0123456789</r>", &limits),
            Err(Error::TooLarge { .. })
        ));
        let deep = "<a>".repeat(100) + &"</a>".repeat(100);
        assert_eq!(p(&deep), Err(Error::TooDeep(48)));
    }

    #[test]
    fn comment_inside_text_is_refused_by_text() {
        let e = p("<NameID>admin<!---->@evil.example</NameID>").unwrap();
        assert_eq!(e.text(), Err(Error::MixedContent("NameID".into())));
    }

    #[test]
    fn serialization_escapes_markup() {
        let e = Element::new("saml", "AttributeValue", ns::SAML)
            .declare("saml", ns::SAML)
            .with_attr("Name", "a\"<b>&'")
            .with_text("<Role>admin</Role> & \"q\" 'a'");
        let xml = e.to_xml();
        assert!(!xml.contains("<Role>"));
        let back = p(&xml).unwrap();
        assert_eq!(back.text().unwrap(), "<Role>admin</Role> & \"q\" 'a'");
        assert_eq!(back.attr("Name"), Some("a\"<b>&'"));
    }

    #[test]
    fn normalizes_line_ends_and_attribute_whitespace() {
        let e = p("<r a=\"x\ty\r\nz\">1\r\n2\r3</r>").unwrap();
        assert_eq!(e.attr("a"), Some("x y z"));
        assert_eq!(e.text().unwrap(), "1\n2\n3");
    }
}
