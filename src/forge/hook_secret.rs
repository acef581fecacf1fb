//! The secret a project's forge webhook (`/forge/PROJECT`) is signed with. A written-out
//! project names its own; a discovered project's is derived for it alone — the hex
//! HMAC-SHA256 of its project name keyed with the secret its template names, or else the
//! organization webhook's secret — so the admin of one repository, who sees only that
//! repository's secret, cannot sign another's webhooks.

use crate::config::{Config, Project, SecretRef};
use crate::secret::{self, Secret};

/// Where a project's webhook secret comes from.
pub(crate) enum Source {
    /// The project's own `webhook_secret_env`/`_file`.
    Own(SecretRef),
    /// Derived from this key (the template's secret, or the organization's) and the project name.
    Derived(SecretRef),
}

/// Where project `name`'s webhook secret comes from; `None`: it has no webhook.
pub(crate) fn source(config: &Config, project: &Project) -> Option<Source> {
    let own = SecretRef::from_pair(&project.webhook_secret_env, &project.webhook_secret_file);
    let Some(forge) = &project.discovered else { return own.map(Source::Own) };
    let org = config
        .forges
        .get(forge)
        .and_then(|f| f.discover.as_ref())
        .and_then(|d| SecretRef::from_pair(&d.webhook_secret_env, &d.webhook_secret_file));
    own.or(org).map(Source::Derived)
}

/// The key's setting, for messages: `forge.F.discover.webhook_secret` or `project.P.webhook_secret`.
fn what(project_name: &str, project: &Project, derived: bool) -> String {
    match (&project.discovered, derived) {
        (Some(forge), true) if project.webhook_secret_env.is_none() && project.webhook_secret_file.is_none() => {
            format!("forge.{forge}.discover.webhook_secret")
        }
        (Some(forge), true) => format!("forge.{forge}.discover.project.webhook_secret"),
        _ => format!("project.{project_name}.webhook_secret"),
    }
}

/// Project `name`'s webhook secret, read now; `None` when it has no webhook.
pub(crate) fn resolve(config: &Config, name: &str, project: &Project) -> anyhow::Result<Option<Secret>> {
    match source(config, project) {
        None => Ok(None),
        Some(Source::Own(r)) => secret::resolve(&r, &what(name, project, false)).map(Some),
        Some(Source::Derived(r)) => {
            let key = secret::resolve(&r, &what(name, project, true))?;
            Ok(Some(secret::derive(&key, name)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_gets_a_secret_of_its_own_that_openssl_derives_alike() {
        let key = Secret::for_tests("org-secret");
        let a = secret::derive(&key, "app");
        assert_ne!(a.reveal(), secret::derive(&key, "other").reveal());
        // printf %s app | openssl dgst -sha256 -hmac org-secret
        assert_eq!(a.reveal(), "d5bbc06f865cb99f41f7c3a1c67d0caea0c7595239baf1ae6278241fe50952a7");
    }
}
