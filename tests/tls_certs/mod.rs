//! Certificates for the TLS tests, made with `rcgen` at test time: a CA the test clients trust,
//! and server certificates it signs (for `localhost` and 127.0.0.1), each with its own key,
//! common name and serial, written as PEM files the server loads.

// Each test crate includes this module and uses a different subset of it.
#![allow(dead_code)]

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, IsCa, KeyPair, SanType, SerialNumber,
};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// A test CA.
pub struct Ca {
    cert: Certificate,
    key: KeyPair,
}

/// A server certificate: its PEM chain and key, and the leaf's DER to compare with what a
/// client is shown.
pub struct ServerCert {
    pub chain_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "turnd test CA");
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        Ca { cert, key }
    }

    /// The CA certificate, DER, for a client's root store.
    pub fn der(&self) -> Vec<u8> {
        self.cert.der().to_vec()
    }

    /// The CA certificate, PEM, for clients that read a CA file (Python's `SSL_CERT_FILE`).
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `localhost`/127.0.0.1 named `cn`, with serial `serial`.
    pub fn issue(&self, cn: &str, serial: u64) -> ServerCert {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
        params
            .subject_alt_names
            .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        let key = KeyPair::generate().expect("server key");
        let cert = params
            .signed_by(&key, &self.cert, &self.key)
            .expect("sign server cert");
        ServerCert {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

/// Where a server's certificate and key files live.
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertFiles {
    /// Writes `c` into `dir` as `cert.pem` and `key.pem`.
    pub fn write(dir: &Path, c: &ServerCert) -> CertFiles {
        let files = CertFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        };
        files.replace(c);
        files
    }

    /// Overwrites both files with `c`.
    pub fn replace(&self, c: &ServerCert) {
        std::fs::write(&self.cert, &c.chain_pem).expect("write cert");
        std::fs::write(&self.key, &c.key_pem).expect("write key");
    }

    /// The server flags for these files and a TLS listener on 127.0.0.1, port 0.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--tls-listen".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            self.cert.display().to_string(),
            "--tls-key".into(),
            self.key.display().to_string(),
        ]
    }
}
