//! SAML 2.0 metadata (saml-metadata): reading what service providers publish about themselves, and
//! publishing Tessera's own IdP metadata.
//!
//! SP metadata is the trust anchor for everything an SP sends: its endpoints decide where assertions may
//! go and its certificates decide which signatures are believed. So parsing is strict about what matters
//! (required attributes, URLs, certificates, validity) and every refusal names the element and the
//! problem, because the person reading the error is an operator holding someone else's XML file.
//! Schema order of the input is not enforced; what we build follows it exactly.

use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use openssl::x509::{X509VerifyResult, X509};

use crate::saml::xml::{self, ns, Element, Limits};
use crate::saml::xmldsig::keys::SigningKey;
use crate::saml::xmldsig::sign;
use crate::saml::xmldsig::verify::{self, VerifiedSignature, VerifyPolicy};

/// saml-bindings 3.4: the HTTP-Redirect binding URI.
pub const BINDING_HTTP_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
/// saml-bindings 3.5: the HTTP-POST binding URI.
pub const BINDING_HTTP_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";

/// Parse limits for metadata. Aggregates (federation feeds) run to several megabytes and tens of
/// thousands of elements, far beyond what a protocol message may be, and nest EntitiesDescriptors.
pub const METADATA_LIMITS: Limits = Limits {
    max_bytes: 8 * 1024 * 1024,
    max_depth: 64,
    max_elements: 200_000,
};

/// saml-core 8.3.6: an entity identifier is a URI of at most 1024 characters.
const MAX_ENTITY_ID: usize = 1024;

/// Why metadata was refused or could not be built. Parse errors name the element and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The document is not XML we accept (see [`crate::saml::xml`]).
    #[error("metadata is not acceptable XML: {0}")]
    Xml(#[from] xml::Error),
    /// The root is neither `md:EntityDescriptor` nor `md:EntitiesDescriptor` (saml-metadata 2.3).
    #[error("metadata root is <{local}> in namespace `{namespace}`, not md:EntityDescriptor or md:EntitiesDescriptor")]
    UnexpectedRoot {
        /// The root's namespace as found, so a SAML 1.x or mis-namespaced file is recognisable.
        namespace: String,
        /// The root's local name as found.
        local: String,
    },
    /// An element breaks a rule of saml-metadata; `element` is its local name.
    #[error("{}<{element}> {problem}", entity_prefix(.entity_id))]
    Invalid {
        /// The entity being read when the problem was found, when one was.
        entity_id: Option<String>,
        /// Local name of the offending element, e.g. `AssertionConsumerService`.
        element: &'static str,
        /// What is wrong with it, e.g. `missing Location`.
        problem: String,
    },
    /// A `validUntil` on the named element is in the past (saml-metadata 2.3.1, 2.3.2, 2.4.1).
    #[error("{}<{element}> expired at {valid_until}", entity_prefix(.entity_id))]
    Expired {
        /// The entity being read, when the expired element is an entity or inside one.
        entity_id: Option<String>,
        /// Local name of the element carrying the expired `validUntil`.
        element: &'static str,
        /// The expiry found, so the operator sees how stale the file is.
        valid_until: DateTime<Utc>,
    },
    /// The same entityID appears twice in one aggregate: which description to trust would be a guess.
    #[error("entity `{0}` is described more than once")]
    DuplicateEntity(String),
    /// The metadata signature did not verify against the pinned certificate (saml-metadata 3.1).
    #[error("metadata signature: {0}")]
    Signature(#[from] verify::Error),
    /// The pinned certificate's public key cannot be read.
    #[error("pinned certificate: {0}")]
    PinnedCertificate(String),
    /// [`build_idp_metadata`] was given a value it cannot publish.
    #[error("cannot build IdP metadata: {field} {problem}")]
    InvalidInput {
        /// The [`IdpMetadata`] field (or parameter) at fault.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// Signing the built metadata failed.
    #[error("cannot sign IdP metadata: {0}")]
    Sign(#[from] sign::Error),
}

fn entity_prefix(entity_id: &Option<String>) -> String {
    match entity_id {
        Some(id) => format!("entity `{id}`: "),
        None => String::new(),
    }
}

/// One protocol endpoint of an SP (saml-metadata 2.2.2 EndpointType, 2.2.3 IndexedEndpointType).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The binding URI: how messages must be delivered to `location`.
    pub binding: String,
    /// Where messages go; checked to be an absolute URL.
    pub location: String,
    /// Where responses go when it differs from `location` (saml-metadata 2.2.2), e.g. for SLO.
    pub response_location: Option<String>,
    /// The index an AuthnRequest may name (AssertionConsumerServiceIndex); only on indexed endpoints.
    pub index: Option<u16>,
    /// The `isDefault` flag, which decides the default endpoint (saml-metadata 2.2.3).
    pub is_default: Option<bool>,
}

/// What Tessera needs to know about one service provider, read from its metadata.
#[derive(Debug, Clone)]
pub struct SpMetadata {
    /// The SP's entityID: the Issuer of its requests and the Audience of our assertions.
    pub entity_id: String,
    /// AssertionConsumerService endpoints, in document order (order matters for the default).
    pub acs: Vec<Endpoint>,
    /// SingleLogoutService endpoints, in document order.
    pub slo: Vec<Endpoint>,
    /// Certificates whose keys may sign the SP's messages (KeyDescriptor use="signing" or no use).
    pub signing_certs: Vec<X509>,
    /// Certificates whose keys may encrypt assertions for the SP (use="encryption" or no use).
    pub encryption_certs: Vec<X509>,
    /// `AuthnRequestsSigned`: the SP promises to sign its requests, so unsigned ones must be refused.
    pub authn_requests_signed: bool,
    /// `WantAssertionsSigned`: the SP wants the assertion itself signed, not only the response.
    pub want_assertions_signed: bool,
    /// NameIDFormat values the SP supports, in its order of preference.
    pub name_id_formats: Vec<String>,
    /// The earliest `validUntil` on this entity or anything enclosing it: when to fetch again.
    pub valid_until: Option<DateTime<Utc>>,
    /// `EncryptionMethod` algorithms listed on encryption-capable KeyDescriptors, in order: what the SP
    /// says it can decrypt (saml-metadata 2.4.1.1).
    pub encryption_methods: Vec<String>,
}

impl SpMetadata {
    /// The default AssertionConsumerService (saml-metadata 2.2.3): the first with isDefault="true",
    /// else the first without isDefault="false", else the first.
    pub fn default_acs(&self) -> Option<&Endpoint> {
        default_endpoint(self.acs.iter())
    }

    /// The default AssertionConsumerService among those using `binding`, by the same rule
    /// (saml-metadata 2.2.3), for when the IdP can only deliver with some bindings.
    pub fn default_acs_with_binding(&self, binding: &str) -> Option<&Endpoint> {
        default_endpoint(self.acs.iter().filter(|e| e.binding == binding))
    }

    /// The AssertionConsumerService with this index (AssertionConsumerServiceIndex, saml-core 3.4.1).
    pub fn acs_by_index(&self, index: u16) -> Option<&Endpoint> {
        self.acs.iter().find(|e| e.index == Some(index))
    }

    /// The AssertionConsumerService whose Location is exactly `url` (AssertionConsumerServiceURL,
    /// saml-core 3.4.1). Exact string match: no normalisation, so no lookalike URL can match.
    pub fn acs_by_url(&self, url: &str) -> Option<&Endpoint> {
        self.acs.iter().find(|e| e.location == url)
    }

    /// The first SingleLogoutService using `binding`.
    pub fn slo_for_binding(&self, binding: &str) -> Option<&Endpoint> {
        self.slo.iter().find(|e| e.binding == binding)
    }
}

/// saml-metadata 2.2.3 default endpoint selection over an ordered list.
fn default_endpoint<'a>(
    endpoints: impl Iterator<Item = &'a Endpoint> + Clone,
) -> Option<&'a Endpoint> {
    endpoints
        .clone()
        .find(|e| e.is_default == Some(true))
        .or_else(|| endpoints.clone().find(|e| e.is_default != Some(false)))
        .or_else(|| endpoints.clone().next())
}

/// Parses SP metadata: a lone `EntityDescriptor`, or an `EntitiesDescriptor` (possibly nested)
/// aggregating many (saml-metadata 2.3.1, 2.3.2), with [`METADATA_LIMITS`].
///
/// In an aggregate, entities that are not SAML 2.0 service providers are skipped; a lone
/// EntityDescriptor without one is an error. Anything malformed, and any expired `validUntil`, fails
/// the whole document: metadata is trusted as a unit.
pub fn parse_sp_metadata(xml: &[u8], now: DateTime<Utc>) -> Result<Vec<SpMetadata>, MetadataError> {
    parse_sp_metadata_with_limits(xml, now, &METADATA_LIMITS)
}

/// [`parse_sp_metadata`] with caller-chosen parse limits.
pub fn parse_sp_metadata_with_limits(
    xml: &[u8],
    now: DateTime<Utc>,
    limits: &Limits,
) -> Result<Vec<SpMetadata>, MetadataError> {
    let root = xml::parse(xml, limits)?;
    read_metadata_root(&root, now)
}

/// Checks that `xml` carries an enveloped signature on its root element (EntityDescriptor or
/// EntitiesDescriptor) made with the key of `pinned` (saml-metadata 3.1; the pinned certificate is the
/// out-of-band trust, so its validity dates are not consulted). SHA-1 is refused. Any other
/// `ds:Signature` inside the document (individually signed entities in an aggregate) makes it fail:
/// the verifier accepts exactly one signature.
pub fn verify_metadata_signature(
    xml: &[u8],
    pinned: &X509,
) -> Result<VerifiedSignature, MetadataError> {
    let root = xml::parse(xml, &METADATA_LIMITS)?;
    verify_root(&root, pinned)
}

/// Verifies the metadata signature against `pinned` and then reads the SPs from the very tree that was
/// verified, so what is trusted is exactly what was signed.
pub fn parse_signed_sp_metadata(
    xml: &[u8],
    now: DateTime<Utc>,
    pinned: &X509,
) -> Result<Vec<SpMetadata>, MetadataError> {
    let root = xml::parse(xml, &METADATA_LIMITS)?;
    verify_root(&root, pinned)?;
    read_metadata_root(&root, now)
}

fn verify_root(root: &Element, pinned: &X509) -> Result<VerifiedSignature, MetadataError> {
    if !root.is(ns::MD, "EntityDescriptor") && !root.is(ns::MD, "EntitiesDescriptor") {
        return Err(MetadataError::UnexpectedRoot {
            namespace: root.namespace.clone().unwrap_or_default(),
            local: root.local.clone(),
        });
    }
    let key = pinned
        .public_key()
        .map_err(|e| MetadataError::PinnedCertificate(e.to_string()))?;
    Ok(verify::verify_enveloped(
        root,
        &[key],
        &VerifyPolicy { allow_sha1: false },
    )?)
}

fn read_metadata_root(
    root: &Element,
    now: DateTime<Utc>,
) -> Result<Vec<SpMetadata>, MetadataError> {
    let mut out = Vec::new();
    if root.is(ns::MD, "EntitiesDescriptor") {
        read_entities(root, now, None, &mut out)?;
    } else if root.is(ns::MD, "EntityDescriptor") {
        match read_entity(root, now, None)? {
            Some(sp) => out.push(sp),
            None => {
                let entity_id = root.attr("entityID").map(str::to_owned);
                return Err(invalid(
                    entity_id.as_deref(),
                    "EntityDescriptor",
                    "has no SPSSODescriptor supporting SAML 2.0",
                ));
            }
        }
    } else {
        return Err(MetadataError::UnexpectedRoot {
            namespace: root.namespace.clone().unwrap_or_default(),
            local: root.local.clone(),
        });
    }
    let mut seen = std::collections::HashSet::new();
    for sp in &out {
        if !seen.insert(sp.entity_id.as_str()) {
            return Err(MetadataError::DuplicateEntity(sp.entity_id.clone()));
        }
    }
    Ok(out)
}

fn invalid(
    entity_id: Option<&str>,
    element: &'static str,
    problem: impl Into<String>,
) -> MetadataError {
    MetadataError::Invalid {
        entity_id: entity_id.map(str::to_owned),
        element,
        problem: problem.into(),
    }
}

/// saml-metadata 2.3.1: an EntitiesDescriptor holds one or more EntityDescriptor or EntitiesDescriptor
/// elements; its validUntil covers everything inside it.
fn read_entities(
    element: &Element,
    now: DateTime<Utc>,
    outer_valid_until: Option<DateTime<Utc>>,
    out: &mut Vec<SpMetadata>,
) -> Result<(), MetadataError> {
    let valid_until =
        check_valid_until(element, "EntitiesDescriptor", None, now, outer_valid_until)?;
    let mut members = 0usize;
    for child in element.elements() {
        if child.is(ns::MD, "EntityDescriptor") {
            members += 1;
            if let Some(sp) = read_entity(child, now, valid_until)? {
                out.push(sp);
            }
        } else if child.is(ns::MD, "EntitiesDescriptor") {
            members += 1;
            read_entities(child, now, valid_until, out)?;
        }
    }
    if members == 0 {
        return Err(invalid(
            None,
            "EntitiesDescriptor",
            "contains no EntityDescriptor or EntitiesDescriptor",
        ));
    }
    Ok(())
}

/// Reads `validUntil` on `element`, refuses it when past, and returns the earliest of it and the
/// enclosing one (saml-metadata 2.3.1: validUntil applies to the element "and any contained elements").
fn check_valid_until(
    element: &Element,
    name: &'static str,
    entity_id: Option<&str>,
    now: DateTime<Utc>,
    outer: Option<DateTime<Utc>>,
) -> Result<Option<DateTime<Utc>>, MetadataError> {
    let Some(raw) = element.attr("validUntil") else {
        return Ok(outer);
    };
    let valid_until = parse_date_time(raw).ok_or_else(|| {
        invalid(
            entity_id,
            name,
            format!("validUntil `{raw}` is not an xs:dateTime"),
        )
    })?;
    if valid_until <= now {
        return Err(MetadataError::Expired {
            entity_id: entity_id.map(str::to_owned),
            element: name,
            valid_until,
        });
    }
    Ok(Some(match outer {
        Some(o) if o < valid_until => o,
        _ => valid_until,
    }))
}

/// xs:dateTime. SAML times are UTC (saml-core 1.3.3) but metadata in the wild carries offsets or none;
/// an offset is honoured and a missing zone read as UTC.
fn parse_date_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f")
        .ok()
        .map(|n| n.and_utc())
}

/// xs:boolean (XML Schema 2 3.2.2): "true", "false", "1", "0".
fn parse_bool(raw: &str) -> Option<bool> {
    match raw.trim() {
        "true" | "1" => Some(true),
        "false" | "0" => Some(false),
        _ => None,
    }
}

/// saml-metadata 2.3.2: one entity. Returns None when it has no SAML 2.0 SPSSODescriptor.
fn read_entity(
    element: &Element,
    now: DateTime<Utc>,
    outer_valid_until: Option<DateTime<Utc>>,
) -> Result<Option<SpMetadata>, MetadataError> {
    // saml-metadata 2.3.2: entityID is required; saml-core 8.3.6 bounds it to 1024 characters.
    let entity_id = element
        .attr("entityID")
        .map(|s| s.trim().to_owned())
        .ok_or_else(|| invalid(None, "EntityDescriptor", "missing entityID"))?;
    if entity_id.is_empty() {
        return Err(invalid(None, "EntityDescriptor", "has an empty entityID"));
    }
    if entity_id.chars().count() > MAX_ENTITY_ID {
        return Err(invalid(
            None,
            "EntityDescriptor",
            format!("entityID is longer than {MAX_ENTITY_ID} characters"),
        ));
    }
    let id = Some(entity_id.as_str());
    let valid_until = check_valid_until(element, "EntityDescriptor", id, now, outer_valid_until)?;

    let mut saml2_sp: Option<&Element> = None;
    for descriptor in element.children_named(ns::MD, "SPSSODescriptor") {
        // saml-metadata 2.4.1: protocolSupportEnumeration is required, a whitespace-separated URI list.
        let protocols = descriptor
            .attr("protocolSupportEnumeration")
            .ok_or_else(|| invalid(id, "SPSSODescriptor", "missing protocolSupportEnumeration"))?;
        if !protocols.split_ascii_whitespace().any(|p| p == ns::SAMLP) {
            continue;
        }
        if saml2_sp.is_some() {
            return Err(invalid(
                id,
                "EntityDescriptor",
                "has more than one SAML 2.0 SPSSODescriptor",
            ));
        }
        saml2_sp = Some(descriptor);
    }
    let Some(descriptor) = saml2_sp else {
        return Ok(None);
    };
    read_sp_descriptor(descriptor, &entity_id, now, valid_until).map(Some)
}

/// saml-metadata 2.4.4: SPSSODescriptor (with 2.4.1 RoleDescriptor and 2.4.2 SSODescriptor content).
fn read_sp_descriptor(
    descriptor: &Element,
    entity_id: &str,
    now: DateTime<Utc>,
    outer_valid_until: Option<DateTime<Utc>>,
) -> Result<SpMetadata, MetadataError> {
    let id = Some(entity_id);
    // saml-metadata 2.4.1: a role descriptor has its own validUntil.
    let valid_until = check_valid_until(descriptor, "SPSSODescriptor", id, now, outer_valid_until)?;

    let flag = |name: &str| -> Result<bool, MetadataError> {
        match descriptor.attr(name) {
            None => Ok(false),
            Some(raw) => parse_bool(raw).ok_or_else(|| {
                invalid(
                    id,
                    "SPSSODescriptor",
                    format!("{name} `{raw}` is not an xs:boolean"),
                )
            }),
        }
    };
    // saml-metadata 2.4.4: both default to false when omitted.
    let authn_requests_signed = flag("AuthnRequestsSigned")?;
    let want_assertions_signed = flag("WantAssertionsSigned")?;

    let mut signing_certs = Vec::new();
    let mut encryption_certs = Vec::new();
    let mut encryption_methods = Vec::new();
    for key_descriptor in descriptor.children_named(ns::MD, "KeyDescriptor") {
        read_key_descriptor(
            key_descriptor,
            id,
            &mut signing_certs,
            &mut encryption_certs,
            &mut encryption_methods,
        )?;
    }

    let mut acs = Vec::new();
    for e in descriptor.children_named(ns::MD, "AssertionConsumerService") {
        acs.push(read_endpoint(e, "AssertionConsumerService", true, id)?);
    }
    // saml-metadata 2.4.4: one or more AssertionConsumerService elements.
    if acs.is_empty() {
        return Err(invalid(
            id,
            "SPSSODescriptor",
            "has no AssertionConsumerService",
        ));
    }
    // saml-metadata 2.2.3: the index is a unique identifier for the endpoint.
    for (i, a) in acs.iter().enumerate() {
        if let Some(index) = a.index {
            if acs[..i].iter().any(|b| b.index == Some(index)) {
                return Err(invalid(
                    id,
                    "AssertionConsumerService",
                    format!("index {index} is used twice"),
                ));
            }
        }
    }

    let mut slo = Vec::new();
    for e in descriptor.children_named(ns::MD, "SingleLogoutService") {
        slo.push(read_endpoint(e, "SingleLogoutService", false, id)?);
    }

    let mut name_id_formats = Vec::new();
    for e in descriptor.children_named(ns::MD, "NameIDFormat") {
        let value = e
            .trimmed_text()
            .map_err(|_| invalid(id, "NameIDFormat", "must hold only text"))?;
        if value.is_empty() {
            return Err(invalid(id, "NameIDFormat", "is empty"));
        }
        name_id_formats.push(value);
    }

    Ok(SpMetadata {
        entity_id: entity_id.to_owned(),
        acs,
        slo,
        signing_certs,
        encryption_certs,
        authn_requests_signed,
        want_assertions_signed,
        name_id_formats,
        valid_until,
        encryption_methods,
    })
}

/// saml-metadata 2.4.1.1: KeyDescriptor. `use` is "signing" or "encryption"; when omitted the key
/// serves both. The key is taken from `ds:KeyInfo/ds:X509Data/ds:X509Certificate` (xmldsig-core 4.4.4).
fn read_key_descriptor(
    key_descriptor: &Element,
    id: Option<&str>,
    signing: &mut Vec<X509>,
    encryption: &mut Vec<X509>,
    methods: &mut Vec<String>,
) -> Result<(), MetadataError> {
    const NAME: &str = "KeyDescriptor";
    let (for_signing, for_encryption) = match key_descriptor.attr("use").map(str::trim) {
        None => (true, true),
        Some("signing") => (true, false),
        Some("encryption") => (false, true),
        Some(other) => {
            return Err(invalid(
                id,
                NAME,
                format!("use `{other}` is neither signing nor encryption"),
            ))
        }
    };
    let key_info = key_descriptor
        .child(ns::DS, "KeyInfo")
        .ok_or_else(|| invalid(id, NAME, "has no ds:KeyInfo"))?;
    let mut certs = Vec::new();
    for x509_data in key_info.children_named(ns::DS, "X509Data") {
        let mut chain = Vec::new();
        for cert_element in x509_data.children_named(ns::DS, "X509Certificate") {
            chain.push(read_certificate(cert_element, id)?);
        }
        certs.extend(end_entity_certificates(chain));
    }
    if certs.is_empty() {
        return Err(invalid(id, NAME, "has no ds:X509Data/ds:X509Certificate"));
    }
    if for_encryption {
        // saml-metadata 2.4.1.1: EncryptionMethod lists algorithms the entity can decrypt with this key.
        for method in key_descriptor.children_named(ns::MD, "EncryptionMethod") {
            let algorithm = method
                .attr("Algorithm")
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .ok_or_else(|| invalid(id, NAME, "has an EncryptionMethod without Algorithm"))?;
            if !methods.iter().any(|m| m == algorithm) {
                methods.push(algorithm.to_owned());
            }
        }
        encryption.extend(certs.iter().cloned());
    }
    if for_signing {
        signing.extend(certs);
    }
    Ok(())
}

/// One `ds:X509Certificate`: base64 (whitespace allowed, xmldsig-core 4.4.4 base64Binary) of DER.
fn read_certificate(element: &Element, id: Option<&str>) -> Result<X509, MetadataError> {
    const NAME: &str = "KeyDescriptor";
    let text = element
        .text()
        .map_err(|_| invalid(id, NAME, "has an X509Certificate that is not plain text"))?;
    let compact: String = text
        .chars()
        .filter(|c| !matches!(c, ' ' | '\t' | '\r' | '\n'))
        .collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            invalid(
                id,
                NAME,
                format!("has an X509Certificate that is not base64: {e}"),
            )
        })?;
    X509::from_der(&der).map_err(|e| {
        invalid(
            id,
            NAME,
            format!("has an X509Certificate that is not a DER certificate: {e}"),
        )
    })
}

/// xmldsig-core 4.4.4: the certificates of one X509Data all relate to one key, either containing it or
/// forming a chain to it. Only the certificates that issued no other one in the set carry that key; the
/// issuers' keys are not the entity's and must not become trusted for its signatures.
fn end_entity_certificates(chain: Vec<X509>) -> Vec<X509> {
    if chain.len() < 2 {
        return chain;
    }
    let issuers: Vec<bool> = chain
        .iter()
        .enumerate()
        .map(|(i, candidate)| {
            chain
                .iter()
                .enumerate()
                .any(|(j, other)| i != j && candidate.issued(other) == X509VerifyResult::OK)
        })
        .collect();
    chain
        .into_iter()
        .zip(issuers)
        .filter(|(_, is_issuer)| !is_issuer)
        .map(|(c, _)| c)
        .collect()
}

/// saml-metadata 2.2.2 EndpointType (Binding, Location required) and 2.2.3 IndexedEndpointType (index,
/// isDefault).
fn read_endpoint(
    element: &Element,
    name: &'static str,
    indexed: bool,
    id: Option<&str>,
) -> Result<Endpoint, MetadataError> {
    let binding = element
        .attr("Binding")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(id, name, "missing Binding"))?;
    let location = element
        .attr("Location")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid(id, name, "missing Location"))?;
    check_absolute_url(&location).map_err(|p| invalid(id, name, format!("Location {p}")))?;
    let response_location = match element.attr("ResponseLocation").map(str::trim) {
        None => None,
        Some(r) => {
            check_absolute_url(r)
                .map_err(|p| invalid(id, name, format!("ResponseLocation {p}")))?;
            Some(r.to_owned())
        }
    };
    let (index, is_default) = if indexed {
        // saml-metadata 2.2.3 requires `index`, but some SP software omits it; such an endpoint is kept
        // and can still be chosen by URL or as the default, never by an index it does not have.
        let index = match element.attr("index") {
            None => None,
            Some(raw) => Some(raw.trim().parse::<u16>().map_err(|_| {
                invalid(
                    id,
                    name,
                    format!("index `{raw}` is not an xs:unsignedShort"),
                )
            })?),
        };
        let is_default = match element.attr("isDefault") {
            None => None,
            Some(raw) => Some(parse_bool(raw).ok_or_else(|| {
                invalid(id, name, format!("isDefault `{raw}` is not an xs:boolean"))
            })?),
        };
        (index, is_default)
    } else {
        (None, None)
    };
    Ok(Endpoint {
        binding,
        location,
        response_location,
        index,
        is_default,
    })
}

/// Endpoint locations receive assertions, so they must be absolute http(s) URLs.
fn check_absolute_url(raw: &str) -> Result<(), String> {
    let url = url::Url::parse(raw).map_err(|e| format!("`{raw}` is not an absolute URL: {e}"))?;
    match url.scheme() {
        "https" | "http" => Ok(()),
        other => Err(format!("`{raw}` has scheme `{other}`, not http or https")),
    }
}

/// What Tessera publishes about itself as an IdP (saml-metadata 2.4.3).
#[derive(Debug, Clone)]
pub struct IdpMetadata {
    /// Our entityID: the Issuer of every response and what SPs configure us by.
    pub entity_id: String,
    /// The single sign-on URL, offered with both the HTTP-Redirect and HTTP-POST bindings.
    pub sso_url: String,
    /// The single logout URL, offered with both bindings; None when logout is not offered.
    pub slo_url: Option<String>,
    /// Signing certificates as base64 DER: the current one first, then the next one when a key rollover
    /// is announced ahead of time so SPs already trust it when it starts signing.
    pub signing_certs: Vec<String>,
    /// NameID formats we can issue, in our order of preference.
    pub name_id_formats: Vec<String>,
    /// `WantAuthnRequestsSigned`: tells SPs that unsigned requests will be refused.
    pub want_authn_requests_signed: bool,
    /// `validUntil` on the EntityDescriptor, so SPs re-fetch before trusting stale keys.
    pub valid_until: Option<DateTime<Utc>>,
}

/// Builds our EntityDescriptor with an IDPSSODescriptor, in the schema order of saml-metadata 2.3.2 /
/// 2.4.1-2.4.3 (KeyDescriptor*, SingleLogoutService*, NameIDFormat*, SingleSignOnService+), and signs it
/// with an enveloped signature as the first child when `signer` is given (saml-metadata 3.1: the
/// signature references the EntityDescriptor by its `ID`, which is `id`).
pub fn build_idp_metadata(
    idp: &IdpMetadata,
    id: &str,
    signer: Option<&SigningKey>,
) -> Result<String, MetadataError> {
    let bad = |field: &'static str, problem: String| MetadataError::InvalidInput { field, problem };
    let entity_id = idp.entity_id.trim();
    if entity_id.is_empty() || entity_id.chars().count() > MAX_ENTITY_ID {
        // saml-core 8.3.6: a URI of at most 1024 characters.
        return Err(bad(
            "entity_id",
            format!("must be 1 to {MAX_ENTITY_ID} characters"),
        ));
    }
    // saml-metadata 2.3.2: ID is an xs:ID, i.e. an NCName.
    if !is_ncname(id) {
        return Err(bad("id", format!("`{id}` is not an XML NCName")));
    }
    check_absolute_url(&idp.sso_url).map_err(|p| bad("sso_url", p))?;
    if let Some(slo) = &idp.slo_url {
        check_absolute_url(slo).map_err(|p| bad("slo_url", p))?;
    }
    if idp.signing_certs.is_empty() {
        return Err(bad(
            "signing_certs",
            "is empty: SPs could not verify anything we sign".into(),
        ));
    }
    for cert in &idp.signing_certs {
        let der = base64::engine::general_purpose::STANDARD
            .decode(cert.as_bytes())
            .map_err(|e| {
                bad(
                    "signing_certs",
                    format!("holds a value that is not base64: {e}"),
                )
            })?;
        X509::from_der(&der).map_err(|e| {
            bad(
                "signing_certs",
                format!("holds a value that is not DER: {e}"),
            )
        })?;
    }
    if idp.name_id_formats.iter().any(|f| f.trim().is_empty()) {
        return Err(bad("name_id_formats", "holds an empty value".into()));
    }

    let md = |local: &str| Element::new("md", local, ns::MD);
    let endpoint = |local: &str, binding: &str, location: &str| {
        md(local)
            .with_attr("Binding", binding)
            .with_attr("Location", location)
    };

    // saml-metadata 2.4.1 (RoleDescriptorType): KeyDescriptor comes first among our children.
    let mut descriptor = md("IDPSSODescriptor")
        .with_attr("protocolSupportEnumeration", ns::SAMLP)
        .with_attr(
            "WantAuthnRequestsSigned",
            if idp.want_authn_requests_signed {
                "true"
            } else {
                "false"
            },
        );
    for cert in &idp.signing_certs {
        // saml-metadata 2.4.1.1: use="signing"; the certificate in ds:X509Certificate (xmldsig-core 4.4.4).
        descriptor =
            descriptor.with_child(md("KeyDescriptor").with_attr("use", "signing").with_child(
                Element::new("ds", "KeyInfo", ns::DS).with_child(
                    Element::new("ds", "X509Data", ns::DS).with_child(
                        Element::new("ds", "X509Certificate", ns::DS).with_text(cert.clone()),
                    ),
                ),
            ));
    }
    // saml-metadata 2.4.2 (SSODescriptorType): SingleLogoutService*, then NameIDFormat*.
    if let Some(slo) = &idp.slo_url {
        descriptor = descriptor
            .with_child(endpoint("SingleLogoutService", BINDING_HTTP_REDIRECT, slo))
            .with_child(endpoint("SingleLogoutService", BINDING_HTTP_POST, slo));
    }
    for format in &idp.name_id_formats {
        descriptor = descriptor.with_child(md("NameIDFormat").with_text(format.trim()));
    }
    // saml-metadata 2.4.3 (IDPSSODescriptorType): SingleSignOnService+ after the SSODescriptor content.
    descriptor = descriptor
        .with_child(endpoint(
            "SingleSignOnService",
            BINDING_HTTP_REDIRECT,
            &idp.sso_url,
        ))
        .with_child(endpoint(
            "SingleSignOnService",
            BINDING_HTTP_POST,
            &idp.sso_url,
        ));

    let mut root = md("EntityDescriptor")
        .declare("md", ns::MD)
        .declare("ds", ns::DS)
        .with_attr("entityID", entity_id)
        .with_attr("ID", id)
        .with_opt_attr(
            "validUntil",
            idp.valid_until
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true)),
        )
        .with_child(descriptor);
    if let Some(key) = signer {
        sign::sign_enveloped(&mut root, key)?;
    }
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&root.to_xml());
    Ok(out)
}

/// Namespaces in XML 1.0 NCName, restricted to ASCII like the IDs the signer accepts.
fn is_ncname(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::saml::xmldsig::keys::{generate_self_signed, KeyKind};
    use chrono::TimeZone;

    const SHIB: &str = include_str!("../../tests/fixtures/metadata/sp-shibboleth.xml");
    const AGGREGATE: &str = include_str!("../../tests/fixtures/metadata/aggregate.xml");
    const SIGNING_CRT: &str = include_str!("../../tests/fixtures/metadata/sp-signing.crt");
    const ENCRYPTION_CRT: &str = include_str!("../../tests/fixtures/metadata/sp-encryption.crt");

    fn at(year: i32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(year, 6, 1, 0, 0, 0).unwrap()
    }

    fn now() -> DateTime<Utc> {
        at(2026)
    }

    fn parse(xml: &str) -> Result<Vec<SpMetadata>, MetadataError> {
        parse_sp_metadata(xml.as_bytes(), now())
    }

    /// Asserts that `xml` is refused as invalid and returns (element, problem).
    fn refused(xml: &str) -> (&'static str, String) {
        match parse(xml) {
            Err(MetadataError::Invalid {
                element, problem, ..
            }) => (element, problem),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    /// Replaces exactly one occurrence, so a fixture edit that stops matching fails loudly.
    fn edit(xml: &str, from: &str, to: &str) -> String {
        assert_eq!(xml.matches(from).count(), 1, "`{from}` must occur once");
        xml.replacen(from, to, 1)
    }

    fn cert(pem: &str) -> X509 {
        X509::from_pem(pem.as_bytes()).unwrap()
    }

    #[test]
    fn reads_shibboleth_sp_metadata() {
        let sps = parse(SHIB).unwrap();
        assert_eq!(sps.len(), 1);
        let sp = &sps[0];
        assert_eq!(sp.entity_id, "https://sp.example.org/shibboleth");
        assert_eq!(sp.acs.len(), 4);
        // saml-metadata 2.2.3: index 1 says isDefault="false", so the first without it is the default.
        let default = sp.default_acs().unwrap();
        assert_eq!(default.index, Some(2));
        assert_eq!(default.binding, BINDING_HTTP_POST);
        assert_eq!(
            default.location,
            "https://sp.example.org/Shibboleth.sso/SAML2/POST"
        );
        assert_eq!(
            sp.acs_by_index(3).unwrap().location,
            "https://sp.example.org/Shibboleth.sso/SAML2/Artifact"
        );
        assert!(sp.acs_by_index(4).is_none());
        assert_eq!(
            sp.acs_by_url("https://sp.example.org/Shibboleth.sso/SAML2/POST")
                .unwrap()
                .index,
            Some(2)
        );
        assert!(sp
            .acs_by_url("https://sp.example.org/Shibboleth.sso/SAML2/POST/")
            .is_none());
        assert!(sp
            .acs_by_url("HTTPS://sp.example.org/Shibboleth.sso/SAML2/POST")
            .is_none());
        assert_eq!(
            sp.default_acs_with_binding(BINDING_HTTP_POST)
                .unwrap()
                .index,
            Some(2)
        );
        assert!(sp.default_acs_with_binding(BINDING_HTTP_REDIRECT).is_none());

        assert_eq!(sp.slo.len(), 3);
        let post_slo = sp.slo_for_binding(BINDING_HTTP_POST).unwrap();
        assert_eq!(
            post_slo.location,
            "https://sp.example.org/Shibboleth.sso/SLO/POST"
        );
        assert_eq!(
            post_slo.response_location.as_deref(),
            Some("https://sp.example.org/Shibboleth.sso/SLO/POST/Response")
        );
        assert_eq!(
            sp.slo_for_binding(BINDING_HTTP_REDIRECT)
                .unwrap()
                .response_location,
            None
        );

        assert_eq!(sp.signing_certs.len(), 1);
        assert_eq!(
            sp.signing_certs[0].to_der().unwrap(),
            cert(SIGNING_CRT).to_der().unwrap()
        );
        assert_eq!(sp.encryption_certs.len(), 1);
        assert_eq!(
            sp.encryption_certs[0].to_der().unwrap(),
            cert(ENCRYPTION_CRT).to_der().unwrap()
        );
        assert_eq!(
            sp.encryption_methods,
            vec![
                "http://www.w3.org/2009/xmlenc11#aes128-gcm",
                "http://www.w3.org/2009/xmlenc11#aes256-gcm",
                "http://www.w3.org/2001/04/xmlenc#aes128-cbc",
                "http://www.w3.org/2001/04/xmlenc#rsa-oaep-mgf1p",
            ]
        );
        assert!(
            sp.authn_requests_signed,
            "AuthnRequestsSigned=\"1\" is xs:boolean true"
        );
        assert!(sp.want_assertions_signed);
        assert_eq!(
            sp.name_id_formats,
            vec![
                "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent",
                "urn:oasis:names:tc:SAML:2.0:nameid-format:transient"
            ]
        );
        assert_eq!(
            sp.valid_until,
            Some(Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn reads_nested_aggregate_and_skips_non_sps() {
        let sps = parse(AGGREGATE).unwrap();
        let ids: Vec<&str> = sps.iter().map(|s| s.entity_id.as_str()).collect();
        assert_eq!(
            ids,
            vec![
                "https://wiki.example.edu/sp",
                "https://app.example.net/saml"
            ]
        );

        let wiki = &sps[0];
        // validUntil of the nested EntitiesDescriptor (2098) is earlier than the outer one (2099).
        assert_eq!(
            wiki.valid_until,
            Some(Utc.with_ymd_and_hms(2098, 1, 1, 0, 0, 0).unwrap())
        );
        assert_eq!(
            wiki.default_acs().unwrap().location,
            "https://wiki.example.edu/acs/post"
        );
        assert_eq!(wiki.acs_by_index(0).unwrap().binding, BINDING_HTTP_REDIRECT);
        // saml-metadata 2.4.1.1: a KeyDescriptor without `use` serves both purposes.
        assert_eq!(wiki.signing_certs.len(), 1);
        assert_eq!(wiki.encryption_certs.len(), 1);
        assert!(!wiki.authn_requests_signed && !wiki.want_assertions_signed);

        let app = &sps[1];
        assert_eq!(
            app.valid_until,
            Some(Utc.with_ymd_and_hms(2097, 1, 1, 0, 0, 0).unwrap())
        );
        assert!(app.signing_certs.is_empty() && app.encryption_certs.is_empty());
        assert!(app.slo.is_empty());
    }

    #[test]
    fn lone_entity_without_sp_role_is_an_error() {
        let idp = r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="https://idp.example">
            <md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
              <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example/sso"/>
            </md:IDPSSODescriptor></md:EntityDescriptor>"#;
        let (element, problem) = refused(idp);
        assert_eq!(element, "EntityDescriptor");
        assert!(problem.contains("SPSSODescriptor"), "{problem}");

        // SAML 1.1-only SP: skipped in the aggregate (tested above), an error alone.
        let saml1 = edit(
            SHIB,
            "urn:oasis:names:tc:SAML:2.0:protocol urn:oasis:names:tc:SAML:1.1:protocol",
            "urn:oasis:names:tc:SAML:1.1:protocol",
        );
        assert_eq!(refused(&saml1).0, "EntityDescriptor");
    }

    #[test]
    fn malformed_endpoints_name_element_and_problem() {
        let post_acs = r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://sp.example.org/Shibboleth.sso/SAML2/POST" index="2"/>"#;
        let cases: Vec<(String, &str, &str)> = vec![
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" index="2"/>"#,
                ),
                "AssertionConsumerService",
                "missing Location",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Location="https://sp.example.org/acs" index="2"/>"#,
                ),
                "AssertionConsumerService",
                "missing Binding",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="/Shibboleth.sso/SAML2/POST" index="2"/>"#,
                ),
                "AssertionConsumerService",
                "Location `/Shibboleth.sso/SAML2/POST` is not an absolute URL",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="javascript:alert(1)" index="2"/>"#,
                ),
                "AssertionConsumerService",
                "Location `javascript:alert(1)` has scheme `javascript`",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="https://sp.example.org/a" index="two"/>"#,
                ),
                "AssertionConsumerService",
                "index `two` is not an xs:unsignedShort",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="https://sp.example.org/a" index="70000"/>"#,
                ),
                "AssertionConsumerService",
                "index `70000` is not an xs:unsignedShort",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="https://sp.example.org/a" index="2" isDefault="yes"/>"#,
                ),
                "AssertionConsumerService",
                "isDefault `yes` is not an xs:boolean",
            ),
            (
                edit(
                    SHIB,
                    post_acs,
                    r#"<md:AssertionConsumerService Binding="b" Location="https://sp.example.org/a" index="3"/>"#,
                ),
                "AssertionConsumerService",
                "index 3 is used twice",
            ),
            (
                edit(
                    SHIB,
                    r#"Location="https://sp.example.org/Shibboleth.sso/SLO/Redirect""#,
                    r#"Loc="https://sp.example.org/Shibboleth.sso/SLO/Redirect""#,
                ),
                "SingleLogoutService",
                "missing Location",
            ),
            (
                edit(
                    SHIB,
                    r#"ResponseLocation="https://sp.example.org/Shibboleth.sso/SLO/POST/Response""#,
                    r#"ResponseLocation="SLO/POST/Response""#,
                ),
                "SingleLogoutService",
                "ResponseLocation `SLO/POST/Response` is not an absolute URL",
            ),
        ];
        for (xml, element, problem) in cases {
            let (got_element, got_problem) = refused(&xml);
            assert_eq!(got_element, element, "{got_problem}");
            assert!(
                got_problem.starts_with(problem),
                "expected `{problem}`, got `{got_problem}`"
            );
        }
    }

    #[test]
    fn descriptor_without_acs_is_refused() {
        let start = SHIB.find("<md:AssertionConsumerService").unwrap();
        let end = SHIB.find("<md:AttributeConsumingService").unwrap();
        let xml = format!("{}{}", &SHIB[..start], &SHIB[end..]);
        assert_eq!(
            refused(&xml),
            (
                "SPSSODescriptor",
                "has no AssertionConsumerService".to_owned()
            )
        );
    }

    #[test]
    fn malformed_descriptor_and_entity_attributes_are_named() {
        let cases: Vec<(String, &str, &str)> = vec![
            (edit(SHIB, r#"AuthnRequestsSigned="1""#, r#"AuthnRequestsSigned="yes""#), "SPSSODescriptor", "AuthnRequestsSigned `yes` is not an xs:boolean"),
            (
                edit(SHIB, r#"protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol urn:oasis:names:tc:SAML:1.1:protocol urn:oasis:names:tc:SAML:1.0:protocol""#, ""),
                "SPSSODescriptor",
                "missing protocolSupportEnumeration",
            ),
            (edit(SHIB, r#"entityID="https://sp.example.org/shibboleth""#, ""), "EntityDescriptor", "missing entityID"),
            (edit(SHIB, r#"entityID="https://sp.example.org/shibboleth""#, r#"entityID="  ""#), "EntityDescriptor", "has an empty entityID"),
            (
                edit(SHIB, r#"entityID="https://sp.example.org/shibboleth""#, &format!(r#"entityID="https://sp.example.org/{}""#, "a".repeat(1024))),
                "EntityDescriptor",
                "entityID is longer than 1024 characters",
            ),
            (edit(SHIB, r#"validUntil="2099-01-01T00:00:00Z""#, r#"validUntil="next year""#), "EntityDescriptor", "validUntil `next year` is not an xs:dateTime"),
            (
                edit(SHIB, "<md:NameIDFormat>urn:oasis:names:tc:SAML:2.0:nameid-format:persistent</md:NameIDFormat>", "<md:NameIDFormat>urn:x<!-- c -->y</md:NameIDFormat>"),
                "NameIDFormat",
                "must hold only text",
            ),
        ];
        for (xml, element, problem) in cases {
            let (got_element, got_problem) = refused(&xml);
            assert_eq!(got_element, element, "{got_problem}");
            assert!(
                got_problem.starts_with(problem),
                "expected `{problem}`, got `{got_problem}`"
            );
        }
    }

    #[test]
    fn bad_key_descriptors_name_key_descriptor() {
        let first_line = SIGNING_CRT.lines().nth(1).unwrap();
        let not_der =
            base64::engine::general_purpose::STANDARD.encode(b"definitely not a certificate");
        let cases: Vec<(String, &str)> = vec![
            (
                edit(SHIB, first_line, "%%%not-base64%%%"),
                "has an X509Certificate that is not base64",
            ),
            (
                {
                    let start =
                        SHIB.find("<ds:X509Certificate>").unwrap() + "<ds:X509Certificate>".len();
                    let end = SHIB.find("</ds:X509Certificate>").unwrap();
                    format!("{}{}{}", &SHIB[..start], not_der, &SHIB[end..])
                },
                "has an X509Certificate that is not a DER certificate",
            ),
            (
                edit(
                    SHIB,
                    r#"<md:KeyDescriptor use="signing">"#,
                    r#"<md:KeyDescriptor use="both">"#,
                ),
                "use `both` is neither signing nor encryption",
            ),
            (
                edit(
                    SHIB,
                    r#"<md:EncryptionMethod Algorithm="http://www.w3.org/2009/xmlenc11#aes256-gcm"/>"#,
                    "<md:EncryptionMethod/>",
                ),
                "has an EncryptionMethod without Algorithm",
            ),
            (
                {
                    let start = SHIB.find("<ds:X509Data>").unwrap();
                    let end = SHIB.find("</ds:X509Data>").unwrap() + "</ds:X509Data>".len();
                    format!("{}{}", &SHIB[..start], &SHIB[end..])
                },
                "has no ds:X509Data/ds:X509Certificate",
            ),
            (
                edit(
                    SHIB,
                    "<md:KeyDescriptor use=\"signing\">\n      <ds:KeyInfo>",
                    "<md:KeyDescriptor use=\"signing\">\n      <ds:KeyInfoX>",
                )
                .replacen("</ds:KeyInfo>", "</ds:KeyInfoX>", 1),
                "has no ds:KeyInfo",
            ),
        ];
        for (xml, problem) in cases {
            let (element, got) = refused(&xml);
            assert_eq!(element, "KeyDescriptor", "{got}");
            assert!(
                got.starts_with(problem),
                "expected `{problem}`, got `{got}`"
            );
        }
    }

    #[test]
    fn expired_metadata_is_refused_at_every_level() {
        // The entity's own validUntil (2099-01-01).
        match parse_sp_metadata(SHIB.as_bytes(), at(2100)) {
            Err(MetadataError::Expired {
                element: "EntityDescriptor",
                entity_id: Some(id),
                ..
            }) => {
                assert_eq!(id, "https://sp.example.org/shibboleth")
            }
            other => panic!("{other:?}"),
        }
        // validUntil is exclusive of the instant itself: metadata at its expiry is no longer valid.
        let instant = Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap();
        assert!(matches!(
            parse_sp_metadata(SHIB.as_bytes(), instant),
            Err(MetadataError::Expired { .. })
        ));
        // An entity inside an aggregate (2097-01-01).
        match parse_sp_metadata(AGGREGATE.as_bytes(), at(2097)) {
            Err(MetadataError::Expired {
                element, entity_id, ..
            }) => {
                assert_eq!(element, "EntityDescriptor");
                assert_eq!(entity_id.as_deref(), Some("https://app.example.net/saml"));
            }
            other => panic!("{other:?}"),
        }
        // The nested EntitiesDescriptor (2098-01-01), which comes before the expired entity.
        assert!(matches!(
            parse_sp_metadata(AGGREGATE.as_bytes(), at(2098)),
            Err(MetadataError::Expired {
                element: "EntitiesDescriptor",
                entity_id: None,
                ..
            })
        ));
        // The outermost EntitiesDescriptor (2099-06-01T12:00).
        let after = Utc.with_ymd_and_hms(2099, 6, 1, 12, 0, 1).unwrap();
        match parse_sp_metadata(AGGREGATE.as_bytes(), after) {
            Err(MetadataError::Expired {
                element: "EntitiesDescriptor",
                valid_until,
                ..
            }) => {
                assert_eq!(
                    valid_until,
                    Utc.with_ymd_and_hms(2099, 6, 1, 12, 0, 0).unwrap()
                )
            }
            other => panic!("{other:?}"),
        }
        // The role descriptor's own validUntil (saml-metadata 2.4.1).
        let role = edit(
            SHIB,
            r#"AuthnRequestsSigned="1""#,
            r#"AuthnRequestsSigned="1" validUntil="2020-01-01T00:00:00Z""#,
        );
        assert!(matches!(
            parse(&role),
            Err(MetadataError::Expired {
                element: "SPSSODescriptor",
                ..
            })
        ));
    }

    #[test]
    fn valid_until_with_offset_or_without_zone() {
        let offset = edit(
            SHIB,
            r#"validUntil="2099-01-01T00:00:00Z""#,
            r#"validUntil="2099-01-01T02:00:00+02:00""#,
        );
        assert_eq!(
            parse(&offset).unwrap()[0].valid_until,
            Some(Utc.with_ymd_and_hms(2099, 1, 1, 0, 0, 0).unwrap())
        );
        let naive = edit(
            SHIB,
            r#"validUntil="2099-01-01T00:00:00Z""#,
            r#"validUntil="2099-01-01T00:00:00.5""#,
        );
        assert!(parse(&naive).unwrap()[0].valid_until.is_some());
    }

    #[test]
    fn document_level_refusals() {
        assert!(matches!(
            parse(r#"<samlp:Response xmlns:samlp="urn:oasis:names:tc:SAML:2.0:protocol"/>"#),
            Err(MetadataError::UnexpectedRoot { local, .. }) if local == "Response"
        ));
        // Right name, wrong namespace (e.g. a SAML 1 or hand-edited file).
        assert!(matches!(
            parse(r#"<EntityDescriptor entityID="x"/>"#),
            Err(MetadataError::UnexpectedRoot { namespace, .. }) if namespace.is_empty()
        ));
        let dtd = format!(
            "<!DOCTYPE x [<!ENTITY a \"b\">]>{}",
            &SHIB[SHIB.find("<md:EntityDescriptor").unwrap()..]
        );
        assert_eq!(
            parse(&dtd).unwrap_err(),
            MetadataError::Xml(xml::Error::Dtd)
        );
        let empty = r#"<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"><Extensions/></EntitiesDescriptor>"#;
        assert_eq!(refused(empty).0, "EntitiesDescriptor");
        // An aggregate with only non-SP entities is valid and yields nothing.
        let idps = r#"<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata"><EntityDescriptor entityID="https://idp"/></EntitiesDescriptor>"#;
        assert!(parse(idps).unwrap().is_empty());
    }

    #[test]
    fn duplicate_entity_in_aggregate_is_refused() {
        let twice = edit(
            AGGREGATE,
            r#"entityID="https://app.example.net/saml""#,
            r#"entityID="https://wiki.example.edu/sp""#,
        );
        assert_eq!(
            parse(&twice).unwrap_err(),
            MetadataError::DuplicateEntity("https://wiki.example.edu/sp".into())
        );
    }

    #[test]
    fn large_aggregates_fit_the_metadata_limits() {
        let entity = |i: usize| {
            format!(
                r#"<EntityDescriptor entityID="https://sp{i}.example"><SPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location="https://sp{i}.example/acs" index="0"/></SPSSODescriptor></EntityDescriptor>"#
            )
        };
        let body: String = (0..5000).map(entity).collect();
        let xml = format!(
            r#"<EntitiesDescriptor xmlns="urn:oasis:names:tc:SAML:2.0:metadata">{body}</EntitiesDescriptor>"#
        );
        assert!(xml.len() > 1_000_000 && xml.len() < METADATA_LIMITS.max_bytes);
        assert_eq!(parse(&xml).unwrap().len(), 5000);
        let tight = Limits {
            max_elements: 100,
            ..METADATA_LIMITS
        };
        assert_eq!(
            parse_sp_metadata_with_limits(xml.as_bytes(), now(), &tight).unwrap_err(),
            MetadataError::Xml(xml::Error::TooManyElements(100))
        );
    }

    #[test]
    fn default_endpoint_rules() {
        let ep = |index: u16, is_default: Option<bool>| Endpoint {
            binding: BINDING_HTTP_POST.into(),
            location: format!("https://sp/{index}"),
            response_location: None,
            index: Some(index),
            is_default,
        };
        let pick =
            |acs: Vec<Endpoint>| default_endpoint(acs.iter()).map(|e| e.index.unwrap_or(999));
        assert_eq!(
            pick(vec![ep(0, None), ep(1, Some(true)), ep(2, Some(true))]),
            Some(1)
        );
        assert_eq!(
            pick(vec![ep(0, Some(false)), ep(1, None), ep(2, None)]),
            Some(1)
        );
        assert_eq!(pick(vec![ep(0, Some(false)), ep(1, Some(false))]), Some(0));
        assert_eq!(pick(vec![]), None);
    }

    /// A CA certificate and a leaf it issued, for the X509Data chain rule.
    fn ca_and_leaf() -> (X509, X509) {
        use openssl::asn1::Asn1Time;
        use openssl::hash::MessageDigest;
        use openssl::pkey::PKey;
        use openssl::rsa::Rsa;
        use openssl::x509::X509NameBuilder;
        let make = |cn: &str, issuer: Option<(&X509, &PKey<openssl::pkey::Private>)>| {
            let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
            let mut name = X509NameBuilder::new().unwrap();
            name.append_entry_by_text("CN", cn).unwrap();
            let name = name.build();
            let mut b = X509::builder().unwrap();
            b.set_version(2).unwrap();
            b.set_subject_name(&name).unwrap();
            b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
                .unwrap();
            b.set_pubkey(&key).unwrap();
            b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
                .unwrap();
            b.set_not_after(&Asn1Time::days_from_now(30).unwrap())
                .unwrap();
            b.sign(issuer.map_or(&key, |(_, k)| k), MessageDigest::sha256())
                .unwrap();
            (b.build(), key)
        };
        let (ca, ca_key) = make("Example CA", None);
        let (leaf, _) = make("sp leaf", Some((&ca, &ca_key)));
        (ca, leaf)
    }

    #[test]
    fn x509_data_chain_yields_only_the_end_entity() {
        let (ca, leaf) = ca_and_leaf();
        let b64 = |c: &X509| base64::engine::general_purpose::STANDARD.encode(c.to_der().unwrap());
        let start = SHIB.find("<ds:X509Certificate>").unwrap();
        let end = SHIB.find("</ds:X509Certificate>").unwrap() + "</ds:X509Certificate>".len();
        // CA first, leaf second: order must not matter.
        let xml = format!(
            "{}<ds:X509Certificate>{}</ds:X509Certificate><ds:X509Certificate>{}</ds:X509Certificate>{}",
            &SHIB[..start],
            b64(&ca),
            b64(&leaf),
            &SHIB[end..]
        );
        let sp = &parse(&xml).unwrap()[0];
        assert_eq!(sp.signing_certs.len(), 1);
        assert_eq!(
            sp.signing_certs[0].to_der().unwrap(),
            leaf.to_der().unwrap()
        );
    }

    fn idp() -> IdpMetadata {
        IdpMetadata {
            entity_id: "https://idp.tessera.example/".into(),
            sso_url: "https://idp.tessera.example/saml/sso".into(),
            slo_url: Some("https://idp.tessera.example/saml/slo".into()),
            signing_certs: vec![],
            name_id_formats: vec![
                "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent".into(),
                "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress".into(),
            ],
            want_authn_requests_signed: true,
            valid_until: Some(Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap()),
        }
    }

    fn key(kind: KeyKind) -> SigningKey {
        generate_self_signed(
            kind,
            "idp",
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
            365,
        )
        .unwrap()
        .0
    }

    #[test]
    fn idp_metadata_follows_schema_order() {
        let current = key(KeyKind::Rsa2048);
        let next = key(KeyKind::EcP256);
        let mut meta = idp();
        meta.signing_certs = vec![
            current.certificate_base64().unwrap(),
            next.certificate_base64().unwrap(),
        ];
        let xml = build_idp_metadata(&meta, "_md1", None).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<md:EntityDescriptor"));
        let root = xml::parse(xml.as_bytes(), &METADATA_LIMITS).unwrap();
        assert!(root.is(ns::MD, "EntityDescriptor"));
        assert_eq!(root.attr("entityID"), Some("https://idp.tessera.example/"));
        assert_eq!(root.attr("ID"), Some("_md1"));
        assert_eq!(root.attr("validUntil"), Some("2027-01-01T00:00:00Z"));
        assert!(root.child(ns::DS, "Signature").is_none());
        let d = root.child(ns::MD, "IDPSSODescriptor").unwrap();
        assert_eq!(d.attr("protocolSupportEnumeration"), Some(ns::SAMLP));
        assert_eq!(d.attr("WantAuthnRequestsSigned"), Some("true"));
        let order: Vec<(&str, Option<&str>)> = d
            .elements()
            .map(|e| (e.local.as_str(), e.attr("Binding")))
            .collect();
        assert_eq!(
            order,
            vec![
                ("KeyDescriptor", None),
                ("KeyDescriptor", None),
                ("SingleLogoutService", Some(BINDING_HTTP_REDIRECT)),
                ("SingleLogoutService", Some(BINDING_HTTP_POST)),
                ("NameIDFormat", None),
                ("NameIDFormat", None),
                ("SingleSignOnService", Some(BINDING_HTTP_REDIRECT)),
                ("SingleSignOnService", Some(BINDING_HTTP_POST)),
            ]
        );
        let certs: Vec<String> = d
            .children_named(ns::MD, "KeyDescriptor")
            .map(|k| {
                assert_eq!(k.attr("use"), Some("signing"));
                let kinfo = k.child(ns::DS, "KeyInfo").unwrap();
                kinfo
                    .child(ns::DS, "X509Data")
                    .unwrap()
                    .child(ns::DS, "X509Certificate")
                    .unwrap()
                    .text()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            certs, meta.signing_certs,
            "current key first, then the next one"
        );
        for sso in d.children_named(ns::MD, "SingleSignOnService") {
            assert_eq!(
                sso.attr("Location"),
                Some("https://idp.tessera.example/saml/sso")
            );
            assert_eq!(sso.attr("ResponseLocation"), None);
        }

        // Without SLO and unsigned requests accepted.
        meta.slo_url = None;
        meta.want_authn_requests_signed = false;
        meta.valid_until = None;
        let root = xml::parse(
            build_idp_metadata(&meta, "_md2", None).unwrap().as_bytes(),
            &METADATA_LIMITS,
        )
        .unwrap();
        assert_eq!(root.attr("validUntil"), None);
        let d = root.child(ns::MD, "IDPSSODescriptor").unwrap();
        assert_eq!(d.attr("WantAuthnRequestsSigned"), Some("false"));
        assert!(d.child(ns::MD, "SingleLogoutService").is_none());
    }

    #[test]
    fn signed_idp_metadata_verifies_and_detects_tampering() {
        let signer = key(KeyKind::Rsa2048);
        let mut meta = idp();
        meta.signing_certs = vec![signer.certificate_base64().unwrap()];
        let xml = build_idp_metadata(&meta, "_md1", Some(&signer)).unwrap();
        let root = xml::parse(xml.as_bytes(), &METADATA_LIMITS).unwrap();
        // saml-metadata 2.3.2 / 3.1: the Signature is the EntityDescriptor's first child.
        assert!(root.elements().next().unwrap().is(ns::DS, "Signature"));
        let verified = verify_metadata_signature(xml.as_bytes(), signer.certificate()).unwrap();
        assert_eq!(verified.algorithm, signer.algorithm());

        let other = key(KeyKind::Rsa2048);
        assert_eq!(
            verify_metadata_signature(xml.as_bytes(), other.certificate()).unwrap_err(),
            MetadataError::Signature(verify::Error::BadSignature)
        );
        let tampered = xml.replacen(
            "https://idp.tessera.example/saml/sso",
            "https://evil.example/sso",
            1,
        );
        assert_eq!(
            verify_metadata_signature(tampered.as_bytes(), signer.certificate()).unwrap_err(),
            MetadataError::Signature(verify::Error::DigestMismatch)
        );
        let unsigned = build_idp_metadata(&meta, "_md1", None).unwrap();
        assert_eq!(
            verify_metadata_signature(unsigned.as_bytes(), signer.certificate()).unwrap_err(),
            MetadataError::Signature(verify::Error::NoSignature)
        );
    }

    #[test]
    fn signed_sp_metadata_is_read_from_the_verified_tree() {
        let signer = key(KeyKind::EcP256);
        let mut root = xml::parse(SHIB.as_bytes(), &METADATA_LIMITS).unwrap();
        sign::sign_enveloped(&mut root, &signer).unwrap();
        let signed = root.to_xml();
        let sps = parse_signed_sp_metadata(signed.as_bytes(), now(), signer.certificate()).unwrap();
        assert_eq!(sps[0].entity_id, "https://sp.example.org/shibboleth");

        let moved = signed.replacen(
            "https://sp.example.org/Shibboleth.sso/SAML2/POST",
            "https://evil.example/acs",
            1,
        );
        assert_eq!(
            parse_signed_sp_metadata(moved.as_bytes(), now(), signer.certificate()).unwrap_err(),
            MetadataError::Signature(verify::Error::DigestMismatch)
        );
        // A signature check is not a substitute for validity: still expired in 2100.
        assert!(matches!(
            parse_signed_sp_metadata(signed.as_bytes(), at(2100), signer.certificate()),
            Err(MetadataError::Expired { .. })
        ));
    }

    #[test]
    fn idp_metadata_refuses_bad_input() {
        let signer = key(KeyKind::Rsa2048);
        let good = IdpMetadata {
            signing_certs: vec![signer.certificate_base64().unwrap()],
            ..idp()
        };
        let field = |meta: &IdpMetadata, id: &str| match build_idp_metadata(meta, id, Some(&signer))
        {
            Err(MetadataError::InvalidInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(&good, "1abc"), "id");
        assert_eq!(field(&good, "a b"), "id");
        assert_eq!(
            field(
                &IdpMetadata {
                    entity_id: " ".into(),
                    ..good.clone()
                },
                "_x"
            ),
            "entity_id"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    sso_url: "/sso".into(),
                    ..good.clone()
                },
                "_x"
            ),
            "sso_url"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    slo_url: Some("slo".into()),
                    ..good.clone()
                },
                "_x"
            ),
            "slo_url"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    signing_certs: vec![],
                    ..good.clone()
                },
                "_x"
            ),
            "signing_certs"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    signing_certs: vec!["bm90IGEgY2VydA==".into()],
                    ..good.clone()
                },
                "_x"
            ),
            "signing_certs"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    signing_certs: vec!["***".into()],
                    ..good.clone()
                },
                "_x"
            ),
            "signing_certs"
        );
        assert_eq!(
            field(
                &IdpMetadata {
                    name_id_formats: vec!["".into()],
                    ..good.clone()
                },
                "_x"
            ),
            "name_id_formats"
        );
        // Values are escaped, never markup.
        let odd = IdpMetadata {
            entity_id: "https://idp/?a=1&b=\"2\"<x>".into(),
            ..good
        };
        let xml = build_idp_metadata(&odd, "_x", None).unwrap();
        let root = xml::parse(xml.as_bytes(), &METADATA_LIMITS).unwrap();
        assert_eq!(root.attr("entityID"), Some("https://idp/?a=1&b=\"2\"<x>"));
    }
}
