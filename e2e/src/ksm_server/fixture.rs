//! The preamble KSM tests share: the sample vault served, devices bound, clients that trust the
//! server's CA. In one place so every test starts the same way and a change of defaults
//! (timeout, retries) reaches them all. What tests call without `?` panics on failure, as the
//! raw client does.

use std::time::Duration;

use keeper_operator::ksm::{ClientOptions, KsmClient, KsmConfig, KsmError, redeem_token};

use super::client::{Device, RawClient};
use super::{ServerHandle, TestServer, sample_vault};

impl TestServer {
    /// The sample vault on a server with the production defaults.
    pub async fn sample() -> anyhow::Result<TestServer> {
        Self::start(sample_vault()).await
    }
}

impl ServerHandle {
    /// Options for the operator's client that trust this server's CA, with no automatic
    /// throttle retries (so each error surfaces) and a timeout short enough for fault tests.
    pub fn client_options(&self) -> ClientOptions {
        ClientOptions {
            extra_ca_pem: Some(self.ca_pem().as_bytes().to_vec()),
            timeout: Duration::from_secs(5),
            throttle_retries: 0,
            ..ClientOptions::default()
        }
    }

    /// The operator's client for a new device bound to `app`, with [`Self::client_options`].
    pub fn ksm_client(&self, app: &str) -> KsmClient {
        self.ksm_client_with(app, |_| {})
    }

    /// [`Self::ksm_client`] with the options changed by `tweak` (a timeout, a retry budget).
    pub fn ksm_client_with(&self, app: &str, tweak: impl FnOnce(&mut ClientOptions)) -> KsmClient {
        let mut options = self.client_options();
        tweak(&mut options);
        let config = self.bound_config(app).expect("a bound config");
        let config = KsmConfig::parse(&config).expect("the bound config parses");
        KsmClient::new(config, &options).expect("a client for the bound config")
    }

    /// Redeems `token` as the operator does, naming this server's host and key.
    pub async fn redeem(&self, token: &str) -> Result<KsmConfig, KsmError> {
        redeem_token(
            token,
            Some(&self.hostname()),
            Some(self.server_public_key()),
            &self.client_options(),
        )
        .await
    }

    /// A one-time token for `app` in the IL5 extended form `IL5:token:keyId:serverPublicKey`,
    /// which carries this server's key.
    pub fn issue_il5_token(&self, app: &str) -> anyhow::Result<String> {
        let (id, point) = self.server_public_key();
        Ok(format!("IL5:{}:{id}:{point}", self.issue_token(app)?))
    }

    /// A new device bound to `app`, as a raw client holds it.
    pub fn bound_device(&self, app: &str) -> Device {
        let config = self.bound_config(app).expect("a bound config");
        Device::from_config(&config).0
    }

    /// A raw client and a new device bound to `app`: the start of a protocol-level test.
    pub fn raw_device(&self, app: &str) -> (RawClient, Device) {
        (RawClient::new(self), self.bound_device(app))
    }
}
