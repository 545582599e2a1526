//! Private templates from local images: upload to object storage, register, reuse, delete.
//!
//! ```text
//! push:   list-templates(private) ─ same name and MD5? ─> reuse (nothing uploaded or registered)
//!            │ no
//!            └─> create bucket (unless ours) ─> upload (MD5 from the same reads) ─> pre-signed GET
//!                ─> register-template ─> wait ─> replace older templates of that name
//!                   (a refusal deletes what this run created: the template if any, the object)
//! delete: get/list-templates ─> delete-template, wait ─> delete the object
//! ```
//!
//! The pre-signed URL carries a signature: it is never logged or printed whole.

pub mod sos;

use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};
use serde::Serialize;
use tokio::io::AsyncReadExt;
use tracing::{info, warn};
use uuid::Uuid;

use crate::exoscale::{self, Client, RegisterTemplate, Template};
pub use sos::{Sos, SosError};

/// What to push.
#[derive(Clone, Debug)]
pub struct PushSpec {
    pub name: String,
    pub file: PathBuf,
    /// The object's key in the bucket.
    pub key: String,
    pub boot_mode: String,
    pub default_user: String,
    pub description: Option<String>,
    /// The MD5 the file must have (hex, lowercase), when the caller knows it.
    pub expected_md5: Option<String>,
    /// How long the pre-signed URL stays valid.
    pub expires: Duration,
    /// Keep older private templates of the same name instead of deleting them.
    pub keep_old: bool,
}

/// What a push did; `--json` prints it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PushReport {
    pub id: Uuid,
    pub name: String,
    pub zone: String,
    pub checksum: String,
    pub size: u64,
    pub bucket: String,
    pub key: String,
    /// Whether this run uploaded the file (false when an existing template was reused).
    pub uploaded: bool,
    /// Whether this run registered a template (false when an existing one was reused).
    pub registered: bool,
    /// Older private templates of the same name that this run deleted.
    pub replaced: Vec<Uuid>,
}

/// What a delete did; `--json` prints it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct DeleteReport {
    pub zone: String,
    pub deleted_templates: Vec<Uuid>,
    /// `bucket/key` of the object deleted (or already absent), when a bucket was known.
    pub deleted_object: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{file}: its MD5 is {actual}, but --checksum says {expected}; nothing was registered")]
    ChecksumMismatch {
        file: String,
        expected: String,
        actual: String,
    },
    #[error(
        "{file} changed while it was uploaded (MD5 {before} before, {after} during the upload)"
    )]
    FileChanged {
        file: String,
        before: String,
        after: String,
    },
    #[error(
        "object storage holds {stored} bytes for `{key}` after uploading {sent}; nothing was registered"
    )]
    SizeMismatch { key: String, sent: u64, stored: u64 },
    #[error("the API refused template `{name}` (MD5 {checksum}): {message}; cleaned up: {cleaned}")]
    Refused {
        name: String,
        checksum: String,
        message: String,
        cleaned: String,
    },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sos(#[from] SosError),
    #[error(transparent)]
    Api(#[from] exoscale::Error),
}

/// The file's MD5 (hex), read in 1 MiB blocks.
pub async fn md5_file(path: &Path) -> Result<String, std::io::Error> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            return Ok(hex::encode(md5.finalize()));
        }
        md5.update(&buf[..n]);
    }
}

fn private_named<'a>(all: &'a [Template], name: &str) -> Vec<&'a Template> {
    all.iter().filter(|t| t.name == name).collect()
}

fn same_md5(t: &Template, md5: &str) -> bool {
    t.checksum
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case(md5))
}

/// Uploads and registers `spec.file` as template `spec.name`, or reuses the private template of
/// that name whose checksum is the file's.
pub async fn push(client: &Client, sos: &Sos, spec: &PushSpec) -> Result<PushReport, PushError> {
    let file = spec.file.display().to_string();
    let read_err = |source| PushError::Read {
        path: file.clone(),
        source,
    };
    let size = tokio::fs::metadata(&spec.file)
        .await
        .map_err(read_err)?
        .len();
    let all = client.list_templates("private").await?;
    let existing: Vec<Template> = private_named(&all, &spec.name)
        .into_iter()
        .cloned()
        .collect();

    // Only when a template of that name exists is the file read twice: once to compare.
    let known_md5 = if existing.is_empty() {
        None
    } else {
        let md5 = md5_file(&spec.file).await.map_err(read_err)?;
        check_expected(spec, &file, &md5)?;
        if let Some(t) = existing.iter().find(|t| same_md5(t, &md5)) {
            info!(template = %t.id, name = %spec.name, "the image is already registered: reused, nothing uploaded");
            return Ok(PushReport {
                id: t.id,
                name: spec.name.clone(),
                zone: client.zone().name().to_owned(),
                checksum: md5,
                size,
                bucket: sos.bucket().to_owned(),
                key: spec.key.clone(),
                uploaded: false,
                registered: false,
                replaced: Vec::new(),
            });
        }
        Some(md5)
    };

    let created = sos.ensure_bucket().await?;
    info!(bucket = sos.bucket(), created, "bucket ready");
    let up = sos.upload(&spec.file, &spec.key).await?;
    info!(key = %spec.key, size = up.size, md5 = %up.md5, "uploaded");
    let cleanup_object = |why: PushError| async move {
        if let Err(e) = sos.delete(&spec.key).await {
            warn!(key = %spec.key, error = %e, "could not delete the uploaded object");
        }
        why
    };
    if let Some(before) = known_md5
        && before != up.md5
    {
        return Err(cleanup_object(PushError::FileChanged {
            file,
            before,
            after: up.md5,
        })
        .await);
    }
    if let Err(e) = check_expected(spec, &file, &up.md5) {
        return Err(cleanup_object(e).await);
    }
    match sos.size(&spec.key).await? {
        Some(stored) if stored == up.size => {}
        stored => {
            return Err(cleanup_object(PushError::SizeMismatch {
                key: spec.key.clone(),
                sent: up.size,
                stored: stored.unwrap_or(0),
            })
            .await);
        }
    }
    let url = sos.presign(&spec.key, spec.expires).await?;
    info!(url = %sos::redact(url.as_str()), expires_s = spec.expires.as_secs(), "pre-signed URL made");

    let req = RegisterTemplate {
        name: spec.name.clone(),
        url: url.to_string(),
        checksum: up.md5.clone(),
        ssh_key_enabled: true,
        password_enabled: false,
        boot_mode: Some(spec.boot_mode.clone()),
        default_user: Some(spec.default_user.clone()),
        description: spec.description.clone(),
    };
    let outcome: Result<Option<Uuid>, (exoscale::Error, Option<Uuid>)> =
        match client.register_template(&req).await {
            Err(e) => Err((e, None)),
            Ok(op) => {
                let reference = op.reference.as_ref().and_then(|r| r.id);
                match client.wait_operation(&op).await {
                    Ok(done) => Ok(done.reference.and_then(|r| r.id).or(reference)),
                    Err(e) => Err((e, reference)),
                }
            }
        };
    let id = match outcome {
        Ok(Some(id)) => id,
        Ok(None) => {
            // The operation succeeded without naming the template: find it by name and MD5.
            let all = client.list_templates("private").await?;
            let found = all
                .iter()
                .find(|t| t.name == spec.name && same_md5(t, &up.md5))
                .map(|t| t.id);
            found.ok_or_else(|| PushError::Refused {
                name: spec.name.clone(),
                checksum: up.md5.clone(),
                message: "the registration succeeded but no such template is listed".into(),
                cleaned: "nothing".into(),
            })?
        }
        Err((e, reference)) => {
            let before: Vec<Uuid> = existing.iter().map(|t| t.id).collect();
            let cleaned = clean_failed(client, sos, spec, &up.md5, reference, &before).await;
            return Err(PushError::Refused {
                name: spec.name.clone(),
                checksum: up.md5,
                message: e.to_string(),
                cleaned,
            });
        }
    };
    info!(template = %id, name = %spec.name, "registered");

    let mut replaced = Vec::new();
    if !spec.keep_old {
        for old in existing.iter().filter(|t| t.id != id) {
            match delete_template(client, old.id).await {
                Ok(_) => replaced.push(old.id),
                Err(e) => {
                    warn!(template = %old.id, error = %e, "could not delete the older template")
                }
            }
        }
    }
    Ok(PushReport {
        id,
        name: spec.name.clone(),
        zone: client.zone().name().to_owned(),
        checksum: up.md5,
        size: up.size,
        bucket: sos.bucket().to_owned(),
        key: spec.key.clone(),
        uploaded: true,
        registered: true,
        replaced,
    })
}

fn check_expected(spec: &PushSpec, file: &str, md5: &str) -> Result<(), PushError> {
    match &spec.expected_md5 {
        Some(expected) if !expected.eq_ignore_ascii_case(md5) => Err(PushError::ChecksumMismatch {
            file: file.to_owned(),
            expected: expected.clone(),
            actual: md5.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// After a refused registration: deletes the template this run created, if the API kept one
/// (by the operation's reference, or a template of that name and MD5 that was not there
/// before), and the uploaded object. Says what it did.
async fn clean_failed(
    client: &Client,
    sos: &Sos,
    spec: &PushSpec,
    md5: &str,
    reference: Option<Uuid>,
    before: &[Uuid],
) -> String {
    let mut done = Vec::new();
    let mut leftovers: Vec<Uuid> = Vec::new();
    if let Some(id) = reference
        && !before.contains(&id)
    {
        match client.get_template(id).await {
            Ok(_) => leftovers.push(id),
            Err(e) if e.kind() == exoscale::ErrorKind::NotFound => {}
            Err(e) => done.push(format!("could not check template {id}: {e}")),
        }
    }
    match client.list_templates("private").await {
        Ok(all) => {
            let more: Vec<Uuid> = all
                .iter()
                .filter(|t| t.name == spec.name && same_md5(t, md5))
                .filter(|t| !before.contains(&t.id) && !leftovers.contains(&t.id))
                .map(|t| t.id)
                .collect();
            leftovers.extend(more);
        }
        Err(e) => done.push(format!("could not list templates: {e}")),
    }
    if leftovers.is_empty() {
        done.push("no template was left".into());
    }
    for id in leftovers {
        match delete_template(client, id).await {
            Ok(_) => done.push(format!("template {id} deleted")),
            Err(e) => done.push(format!("template {id} NOT deleted ({e})")),
        }
    }
    match sos.delete(&spec.key).await {
        Ok(()) => done.push(format!("object {}/{} deleted", sos.bucket(), spec.key)),
        Err(e) => done.push(format!(
            "object {}/{} NOT deleted ({e})",
            sos.bucket(),
            spec.key
        )),
    }
    done.join(", ")
}

/// Deletes one template and waits for the operation; a template already gone counts as deleted.
pub async fn delete_template(client: &Client, id: Uuid) -> Result<bool, exoscale::Error> {
    match client.delete_template(id).await {
        Ok(op) => {
            client.wait_operation(&op).await?;
            Ok(true)
        }
        Err(e) if e.kind() == exoscale::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Which templates to delete.
#[derive(Clone, Debug)]
pub enum Selector {
    Id(Uuid),
    Name(String),
}

/// Deletes the selected private templates and, when `object` names a bucket's key, the object.
pub async fn delete(
    client: &Client,
    selector: &Selector,
    object: Option<(&Sos, &str)>,
) -> Result<DeleteReport, PushError> {
    let targets: Vec<Uuid> = match selector {
        Selector::Id(id) => match client.get_template(*id).await {
            Ok(t) => vec![t.id],
            Err(e) if e.kind() == exoscale::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        },
        Selector::Name(name) => private_named(&client.list_templates("private").await?, name)
            .into_iter()
            .map(|t| t.id)
            .collect(),
    };
    let mut deleted = Vec::new();
    for id in targets {
        if delete_template(client, id).await? {
            deleted.push(id);
        }
    }
    let deleted_object = match object {
        Some((sos, key)) => {
            sos.delete(key).await?;
            Some(format!("{}/{key}", sos.bucket()))
        }
        None => None,
    };
    Ok(DeleteReport {
        zone: client.zone().name().to_owned(),
        deleted_templates: deleted,
        deleted_object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn md5_of_a_file_is_the_rfc_1321_digest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            md5_file(&p).await.unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn an_expected_checksum_must_match_whatever_its_case() {
        let spec = |expected: Option<&str>| PushSpec {
            name: "n".into(),
            file: "f".into(),
            key: "n.qcow2".into(),
            boot_mode: "legacy".into(),
            default_user: "root".into(),
            description: None,
            expected_md5: expected.map(str::to_owned),
            expires: Duration::from_secs(3600),
            keep_old: false,
        };
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        assert!(check_expected(&spec(None), "f", md5).is_ok());
        assert!(check_expected(&spec(Some("900150983CD24FB0D6963F7D28E17F72")), "f", md5).is_ok());
        let e = check_expected(&spec(Some("0123456789abcdef0123456789abcdef")), "f", md5)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(md5) && e.contains("0123456789abcdef0123456789abcdef"),
            "{e}"
        );
    }
}
