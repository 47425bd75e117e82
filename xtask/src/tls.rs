//! The dev stack's Postgres speaks TLS with a certificate from a throwaway CA made
//! here (rcgen on ring: no openssl CLI needed). Clients verify it with
//! `sslmode=verify-full&sslrootcert=<dev dir>/tls/ca.crt` (`SPINE_PG_SSLROOTCERT`
//! in `cargo xtask env`); plain connections keep working.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Names the server certificate is valid for: what the stack's URLs use.
pub const SERVER_NAMES: [&str; 2] = ["localhost", "127.0.0.1"];

/// A CA certificate and a server certificate it signed, with the server's key,
/// all PEM.
pub struct DevCerts {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

/// A new CA (its key is dropped: nothing else is ever signed with it) and a
/// server certificate for [`SERVER_NAMES`].
pub fn generate() -> Result<DevCerts> {
    let ca_key = KeyPair::generate().context("generating the CA key")?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.distinguished_name
        .push(DnType::CommonName, "Spine dev stack CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).context("signing the CA")?;
    let issuer = Issuer::new(ca, ca_key);

    let server_key = KeyPair::generate().context("generating the server key")?;
    let mut server = CertificateParams::new(SERVER_NAMES.map(String::from).to_vec())?;
    server
        .distinguished_name
        .push(DnType::CommonName, SERVER_NAMES[0]);
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_cert = server
        .signed_by(&server_key, &issuer)
        .context("signing the server certificate")?;
    Ok(DevCerts {
        ca_pem: ca_cert.pem(),
        server_pem: server_cert.pem(),
        server_key_pem: server_key.serialize_pem(),
    })
}
