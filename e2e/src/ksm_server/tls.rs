//! The server's own PKI: a fresh CA per server and a leaf for `127.0.0.1` / `localhost`, so clients
//! keep certificate verification on and only trust the CA (docs/dev/protocol.md#the-test-server).

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;
use tokio_rustls::TlsAcceptor;

/// The CA certificate (PEM) and a TLS acceptor presenting the leaf signed by it.
pub(crate) struct ServerTls {
    pub ca_pem: String,
    pub acceptor: TlsAcceptor,
}

fn validity(params: &mut CertificateParams) {
    // Fixed dates keep the PKI simple; the CA is new for every server anyway.
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2049, 12, 31);
}

pub(crate) fn generate() -> anyhow::Result<ServerTls> {
    let mut ca_params = CertificateParams::new(Vec::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "keeper-e2e test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "keeper-operator e2e");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut ca_params);
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    validity(&mut leaf_params);
    let leaf_key = KeyPair::generate().context("leaf key")?;
    let leaf_cert = leaf_params
        .signed_by(&leaf_key, &issuer)
        .context("leaf certificate")?;

    let chain: Vec<CertificateDer<'static>> = vec![leaf_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ServerTls {
        ca_pem: ca_cert.pem(),
        acceptor: TlsAcceptor::from(Arc::new(config)),
    })
}
