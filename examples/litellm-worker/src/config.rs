//! The worker's configuration, built with the loader it shares with the server
//! (`stratai_litellm::config`): the same file (`STRATAI_CONFIG`) and the same keys, the seed's
//! Appendix A names (`DATABASE_URL`, `LITELLM_URL`, `LITELLM_MASTER_KEY`), the worker's former
//! names still accepted with a warning, and no silent in-memory database.

use stratai_litellm::config::{
    ConfigError, DatabaseSettings, Env, LiteLlmSettings, Lookup, flag_setting, invalid, load_file,
};

/// The worker's former names, accepted with a warning: `(old, new)`.
pub(crate) const DEPRECATED: &[(&str, &str)] = &[
    ("STRATAI_DATABASE_URL", "DATABASE_URL"),
    ("STRATAI_LITELLM_URL", "LITELLM_URL"),
    ("STRATAI_LITELLM_MASTER_KEY", "LITELLM_MASTER_KEY"),
];

/// The worker's validated configuration.
#[derive(Debug)]
pub(crate) struct WorkerConfig {
    /// The database (`None` with `--demo`, which seeds its own in-memory store).
    pub(crate) database: Option<DatabaseSettings>,
    /// The proxy and the key vault.
    pub(crate) litellm: LiteLlmSettings,
    /// One line per deprecated name used, for the start log.
    pub(crate) warnings: Vec<String>,
}

impl WorkerConfig {
    /// Loads the file named by `STRATAI_CONFIG` (if any) with `env` on top. `demo`: the worker
    /// runs on its own seeded in-memory store, so no database is read and the vault key may
    /// be ephemeral.
    pub(crate) fn load(env: &impl Env, demo: bool) -> Result<Self, ConfigError> {
        let env = Lookup::new(env, DEPRECATED);
        let file = load_file(&env)?;
        let database = if demo {
            None
        } else {
            let database = DatabaseSettings::load(&env, &file, None)?;
            let allow_memory = flag_setting(
                &env,
                "STRATAI_ALLOW_MEMORY_DATABASE",
                file.allow_memory_database,
            )?
            .unwrap_or(false);
            if database.is_in_memory() && !allow_memory {
                return Err(invalid(
                    "DATABASE_URL",
                    "is an in-memory database: the worker would sync and reconcile an empty \
                     directory (with --repair, deleting every key it does not know); set \
                     STRATAI_ALLOW_MEMORY_DATABASE=true if that is really meant",
                ));
            }
            Some(database)
        };
        // An ephemeral vault key only where nothing outlives the process.
        let ephemeral_ok = database.as_ref().is_none_or(DatabaseSettings::is_in_memory);
        let litellm =
            LiteLlmSettings::load(&env, &file.litellm, ephemeral_ok)?.ok_or_else(|| {
                invalid(
                    "LITELLM_URL",
                    "required (with LITELLM_MASTER_KEY): the proxy the worker syncs",
                )
            })?;
        Ok(Self {
            database,
            litellm,
            warnings: env.into_warnings(),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use super::*;

    const KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn proxy() -> Vec<(&'static str, &'static str)> {
        vec![
            ("LITELLM_URL", "http://127.0.0.1:4000"),
            ("LITELLM_MASTER_KEY", "sk-master"),
        ]
    }

    #[test]
    fn appendix_a_names_are_read_without_warnings() {
        let mut pairs = proxy();
        pairs.push(("DATABASE_URL", "postgres://app@127.0.0.1/stratai"));
        pairs.push(("STRATAI_VAULT_KEY", KEY_HEX));
        let c = WorkerConfig::load(&env(&pairs), false).unwrap();
        assert_eq!(
            c.database.unwrap().url.expose(),
            "postgres://app@127.0.0.1/stratai"
        );
        assert_eq!(c.litellm.url.as_str(), "http://127.0.0.1:4000/");
        assert_eq!(c.litellm.master_key.expose(), "sk-master");
        assert!(c.litellm.vault_key.is_some());
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn the_former_names_still_work_and_each_warns() {
        let c = WorkerConfig::load(
            &env(&[
                ("STRATAI_LITELLM_URL", "http://127.0.0.1:4000"),
                ("STRATAI_LITELLM_MASTER_KEY", "sk-old"),
                ("STRATAI_DATABASE_URL", "sqlite:///tmp/w.db"),
                ("STRATAI_VAULT_KEY", KEY_HEX),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(c.litellm.master_key.expose(), "sk-old");
        assert_eq!(c.database.unwrap().url.expose(), "sqlite:///tmp/w.db");
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        for (old, new) in DEPRECATED {
            assert!(
                c.warnings
                    .iter()
                    .any(|w| w.contains(old) && w.contains(new) && w.contains("deprecated")),
                "{old}: {:?}",
                c.warnings
            );
        }
    }

    #[test]
    fn an_in_memory_database_is_refused_unless_asked_for() {
        let e = WorkerConfig::load(&env(&proxy()), false).unwrap_err();
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
        let mut pairs = proxy();
        pairs.push(("DATABASE_URL", "sqlite::memory:"));
        let e = WorkerConfig::load(&env(&pairs), false).unwrap_err();
        assert!(
            e.to_string().contains("STRATAI_ALLOW_MEMORY_DATABASE"),
            "{e}"
        );
        pairs.push(("STRATAI_ALLOW_MEMORY_DATABASE", "true"));
        let c = WorkerConfig::load(&env(&pairs), false).unwrap();
        assert!(c.database.unwrap().is_in_memory());
        // Nothing outlives the process: the vault key may be ephemeral.
        assert!(c.litellm.vault_key.is_none());
        // --demo reads no database at all.
        assert!(
            WorkerConfig::load(&env(&proxy()), true)
                .unwrap()
                .database
                .is_none()
        );
    }

    #[test]
    fn a_database_that_outlives_the_process_needs_the_vault_key() {
        let mut pairs = proxy();
        pairs.push(("DATABASE_URL", "sqlite:///tmp/w.db"));
        let e = WorkerConfig::load(&env(&pairs), false).unwrap_err();
        assert!(e.to_string().contains("STRATAI_VAULT_KEY"), "{e}");
        pairs.push(("STRATAI_VAULT_KEY", "not-a-key"));
        let e = WorkerConfig::load(&env(&pairs), false).unwrap_err();
        assert!(e.to_string().contains("STRATAI_VAULT_KEY"), "{e}");
        assert!(!e.to_string().contains("not-a-key"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("STRATAI_ALLOW_MEMORY_DATABASE", "sometimes"),
            ("STRATAI_VAULT_REPLACE_FOREIGN", "2"),
            ("LITELLM_URL", "ftp://proxy"),
            ("DATABASE_URL", "mysql://x"),
        ] {
            let mut pairs = proxy();
            pairs.push(("DATABASE_URL", "sqlite::memory:"));
            pairs.push(("STRATAI_ALLOW_MEMORY_DATABASE", "yes"));
            pairs.retain(|(k, _)| *k != key);
            pairs.push((key, value));
            let e = WorkerConfig::load(&env(&pairs), false).unwrap_err();
            assert!(e.to_string().contains(key), "{key}={value}: {e}");
        }
        let e = WorkerConfig::load(&env(&[("LITELLM_MASTER_KEY", "sk")]), true).unwrap_err();
        assert!(e.to_string().contains("LITELLM_URL"), "{e}");
    }

    #[test]
    fn the_file_has_the_same_keys_as_the_server() {
        let dir = stratai_testkit::Scratch::new();
        let path = dir.join("stratai.toml");
        std::fs::write(
            &path,
            format!(
                "database_url = \"sqlite:///tmp/f.db\"\nbind = \"127.0.0.1:9\"\n\
                 [litellm]\nurl = \"http://127.0.0.1:4000\"\nmaster_key = \"sk-file\"\n\
                 vault_key = \"{KEY_HEX}\"\nsync = \"worker\"\n"
            ),
        )
        .unwrap();
        let c =
            WorkerConfig::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())]), false).unwrap();
        assert_eq!(c.database.unwrap().url.expose(), "sqlite:///tmp/f.db");
        assert_eq!(c.litellm.master_key.expose(), "sk-file");
        std::fs::write(&path, "databse_url = \"x\"\n").unwrap();
        let e = WorkerConfig::load(&env(&[("STRATAI_CONFIG", path.to_str().unwrap())]), false)
            .unwrap_err();
        assert!(e.to_string().contains("databse_url"), "{e}");
    }
}
