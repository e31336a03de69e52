//! The sample vault (`e2e/testdata/sample-vault.json`), compiled in so every test and tool
//! shares one copy, plus the UIDs tests refer to.

use super::spec::{Listing, VaultSpec};

pub const SAMPLE_VAULT_JSON: &str = include_str!("../../testdata/sample-vault.json");

/// The sample vault: app `operator` sees the shared folder "Production" (with the sub-folder
/// "Databases") and the directly shared "Stripe API"; app `ci` sees the folder "Staging".
pub fn sample_vault() -> VaultSpec {
    VaultSpec::from_json(SAMPLE_VAULT_JSON).expect("the bundled sample vault is valid")
}

/// The sample vault with "Web Certificate" (directly in Production) and "Postgres" (in its
/// sub-folder Databases) listed the way Keeper lists records made by Commander or the Vault UI.
pub fn flat_in_folder_sample_vault() -> VaultSpec {
    let mut spec = sample_vault();
    for record in &mut spec.records {
        if record.uid == uids::WEB_CERT || record.uid == uids::POSTGRES {
            record.listing = Listing::FlatInFolder;
        }
    }
    spec
}

/// The content of file `uid` of the sample vault.
pub fn sample_file(uid: &str) -> Vec<u8> {
    let vault = sample_vault();
    let file = vault.file(uid).expect("a file of the sample vault");
    file.bytes().expect("the sample vault's files decode")
}

/// UIDs of the sample vault.
pub mod uids {
    /// Shared folder "Production".
    pub const PRODUCTION: &str = "WrCSNEzZNMFwau1vshzjIA";
    /// Sub-folder "Databases" of "Production".
    pub const DATABASES: &str = "eyVTib_CDFxqbRt9kaF8Yw";
    /// Shared folder "Staging".
    pub const STAGING: &str = "sXPn9haeUZfuv4Xp_nAUYw";
    /// Login "Postgres" in Databases: login, password, url; custom fields incl. a repeated label.
    pub const POSTGRES: &str = "YP6qLSSxX3qEJLYyQs6iZw";
    /// databaseCredentials "Analytics DB" in Databases, with a `host` {hostName, port}.
    pub const ANALYTICS: &str = "Tv3hXMtMZxaQgmbqhA5-Zw";
    /// "Web Certificate" in Production, with files cert.pem and bundle.bin.
    pub const WEB_CERT: &str = "eOg9gnMeK3HgPNAqf7KB7g";
    /// File cert.pem of "Web Certificate".
    pub const CERT_FILE: &str = "SP4eXwtZ4A3YYDQ0Rjrpcw";
    /// File bundle.bin of "Web Certificate".
    pub const BUNDLE_FILE: &str = "nB2sOuesTb5_sVck9oX-Aw";
    /// "Stripe API", shared directly with the app `operator`; custom fields "Webhook Secret"
    /// and the numeric "Support PIN".
    pub const STRIPE: &str = "SsxoiM-FPCF65F54JaY3jQ";
    /// "Postgres" of Staging (same title as the production one), seen by the app `ci`.
    pub const STAGING_POSTGRES: &str = "qzT_rmdvraJvbefxOoUyCQ";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_uids_exist() {
        let vault = sample_vault();
        for uid in [
            uids::POSTGRES,
            uids::ANALYTICS,
            uids::WEB_CERT,
            uids::STRIPE,
        ] {
            assert!(vault.records.iter().any(|r| r.uid == uid), "{uid}");
        }
        assert!(vault.file(uids::CERT_FILE).is_some());
        assert!(vault.file(uids::BUNDLE_FILE).is_some());
    }
}
