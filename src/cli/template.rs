//! `poolpilot template push|delete|register`: the Terraform provider has no template resource,
//! so images built by Nix become private templates with this command (Terraform calls it from a
//! `local-exec`). Exit codes: 0 done, 64 invalid input (before any network call), 1 anything
//! else (refused registration, object storage or API failure), with the reason on stderr.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use url::Url;

use super::{ApiArgs, CliError, FileConfig};
use crate::config::{ConfigError, Dur};
use crate::exoscale::{Client, RegisterTemplate};
use crate::template::{self, PushSpec, Selector, Sos};

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Upload a qcow2 image to object storage and register it as a private template (or reuse
    /// the template of that name and checksum); prints the template id.
    Push(PushArgs),
    /// Delete private templates (by --name or --id) and, with --bucket, their uploaded object.
    Delete(DeleteArgs),
    /// Register a qcow2 image (reachable at --url) as a template, and wait until it is ready.
    Register(RegisterArgs),
}

/// Where the image goes in object storage.
#[derive(Debug, Args)]
pub struct SosArgs {
    /// The object storage endpoint [default: the zone's, https://sos-{zone}.exo.io].
    #[arg(long, value_name = "URL")]
    pub sos_endpoint: Option<String>,
}

#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub sos: SosArgs,
    /// The bucket to upload to (created when missing).
    #[arg(long)]
    pub bucket: String,
    /// The template's name (Terraform looks it up by this name).
    #[arg(long)]
    pub name: String,
    /// The qcow2 image.
    #[arg(long, value_name = "IMAGE")]
    pub file: PathBuf,
    /// The object's key in the bucket [default: NAME.qcow2].
    #[arg(long)]
    pub key: Option<String>,
    /// The image's expected MD5, hex: the push fails, registering nothing, if the file differs.
    #[arg(long)]
    pub checksum: Option<String>,
    #[arg(long, value_enum, default_value_t = BootMode::Legacy)]
    pub boot_mode: BootMode,
    #[arg(long)]
    pub description: Option<String>,
    /// The login user for SSH keys (the images use root).
    #[arg(long, default_value = "root")]
    pub default_user: String,
    /// How long the pre-signed download URL given to Exoscale stays valid (1m to 7d).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub expires: Dur,
    /// Keep older private templates of the same name (by default a new image replaces them).
    #[arg(long)]
    pub keep_old: bool,
    /// How long to wait for Exoscale to download and register the image.
    #[arg(long, value_name = "DURATION", default_value = "30m")]
    pub wait_timeout: Dur,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "id"])))]
pub struct DeleteArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    #[command(flatten)]
    pub sos: SosArgs,
    /// Delete every private template of this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Delete the template of this id.
    #[arg(long)]
    pub id: Option<String>,
    /// Also delete the uploaded object from this bucket.
    #[arg(long)]
    pub bucket: Option<String>,
    /// The object's key [default: NAME.qcow2; required with --id and --bucket].
    #[arg(long)]
    pub key: Option<String>,
    /// Print the result as one JSON object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BootMode {
    Legacy,
    Uefi,
}

impl BootMode {
    pub fn as_str(self) -> &'static str {
        match self {
            BootMode::Legacy => "legacy",
            BootMode::Uefi => "uefi",
        }
    }
}

#[derive(Debug, Args)]
pub struct RegisterArgs {
    #[command(flatten)]
    pub api: ApiArgs,
    /// The template's name (Terraform looks it up by this name).
    #[arg(long)]
    pub name: String,
    /// Where Exoscale downloads the image (e.g. a pre-signed object storage URL).
    #[arg(long)]
    pub url: String,
    /// The image's MD5, hex (`md5sum image.qcow2`).
    #[arg(long)]
    pub checksum: String,
    #[arg(long, value_enum, default_value_t = BootMode::Legacy)]
    pub boot_mode: BootMode,
    #[arg(long)]
    pub description: Option<String>,
    /// The login user for SSH keys (the images use root).
    #[arg(long, default_value = "root")]
    pub default_user: String,
    /// Return once the registration is accepted instead of waiting for the template.
    #[arg(long)]
    pub no_wait: bool,
}

fn validate_name(name: &str) -> Result<(), ConfigError> {
    if name.trim().is_empty() || name.len() > 255 {
        return Err(ConfigError::invalid(
            "--name",
            "must be 1 to 255 characters",
        ));
    }
    Ok(())
}

fn validate_md5(field: &str, md5: &str) -> Result<(), ConfigError> {
    if md5.len() != 32 || !md5.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ConfigError::invalid(
            field,
            "must be an MD5 in hex (32 characters), as `md5sum` prints it",
        ));
    }
    Ok(())
}

/// S3's bucket naming rules (3 to 63 lowercase letters, digits, dots and hyphens, starting and
/// ending with a letter or digit).
fn validate_bucket(bucket: &str) -> Result<(), ConfigError> {
    let ok_chars = bucket
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
    let ends = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(3..=63).contains(&bucket.len())
        || !ok_chars
        || !ends(bucket.bytes().next())
        || !ends(bucket.bytes().last())
        || bucket.contains("..")
    {
        return Err(ConfigError::invalid(
            "--bucket",
            format!(
                "`{bucket}` is not a bucket name (3 to 63 lowercase letters, digits, `.` and `-`)"
            ),
        ));
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), ConfigError> {
    if key.is_empty() || key.len() > 1024 || key.starts_with('/') || key.contains("//") {
        return Err(ConfigError::invalid(
            "--key",
            "must be 1 to 1024 characters, without a leading `/` or empty segments",
        ));
    }
    Ok(())
}

fn sos_endpoint(a: &SosArgs, api: &ApiArgs, file: &FileConfig) -> Result<Url, ConfigError> {
    let raw = a
        .sos_endpoint
        .clone()
        .unwrap_or_else(|| template::sos::default_endpoint(api.zone(file)));
    let url = Url::parse(raw.trim()).map_err(|e| {
        ConfigError::invalid(
            "--sos-endpoint",
            format!("must be a URL, got `{raw}` ({e})"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() || url.query().is_some() {
        return Err(ConfigError::invalid(
            "--sos-endpoint",
            format!("must be an http(s) base URL such as https://sos-ch-gva-2.exo.io, got `{raw}`"),
        ));
    }
    Ok(url)
}

fn sos(client: &Client, endpoint: &Url, bucket: &str) -> Result<Sos, ConfigError> {
    let cfg = client.config();
    Sos::new(
        endpoint,
        cfg.zone,
        bucket,
        &cfg.credentials,
        &cfg.retry,
        cfg.request_timeout.max(Duration::from_secs(120)),
    )
    .map_err(|e| ConfigError::invalid("--sos-endpoint", e.to_string()))
}

struct Push {
    client: Client,
    sos: Sos,
    spec: PushSpec,
}

fn validate_push(a: &PushArgs, file: &FileConfig) -> Result<Push, ConfigError> {
    validate_name(&a.name)?;
    validate_bucket(&a.bucket)?;
    let key = a.key.clone().unwrap_or_else(|| format!("{}.qcow2", a.name));
    validate_key(&key)?;
    if let Some(c) = &a.checksum {
        validate_md5("--checksum", c)?;
    }
    match std::fs::metadata(&a.file) {
        Ok(m) if m.is_file() && m.len() > 0 => {}
        Ok(m) if m.is_file() => {
            return Err(ConfigError::invalid(
                "--file",
                format!("{} is empty", a.file.display()),
            ));
        }
        Ok(_) => {
            return Err(ConfigError::invalid(
                "--file",
                format!("{} is not a regular file", a.file.display()),
            ));
        }
        Err(e) => {
            return Err(ConfigError::invalid(
                "--file",
                format!("cannot read {}: {e}", a.file.display()),
            ));
        }
    }
    if std::fs::File::open(&a.file).is_err() {
        return Err(ConfigError::invalid(
            "--file",
            format!("cannot open {}", a.file.display()),
        ));
    }
    let expires = a.expires.get();
    if expires < Duration::from_secs(60) || expires > Duration::from_secs(7 * 24 * 3600) {
        return Err(ConfigError::invalid(
            "--expires",
            "must be between 1m and 7d (S3 pre-signed URLs last at most 7 days)",
        ));
    }
    if a.wait_timeout.get() < Duration::from_secs(1) {
        return Err(ConfigError::invalid(
            "--wait-timeout",
            "must be at least 1s",
        ));
    }
    let endpoint = sos_endpoint(&a.sos, &a.api, file)?;
    let mut cfg = a.api.client(file)?.config().clone();
    cfg.poll.timeout = a.wait_timeout.get();
    let client = Client::new(cfg).map_err(|e| ConfigError::invalid("api client", e.to_string()))?;
    let sos = sos(&client, &endpoint, &a.bucket)?;
    Ok(Push {
        client,
        sos,
        spec: PushSpec {
            name: a.name.clone(),
            file: a.file.clone(),
            key,
            boot_mode: a.boot_mode.as_str().into(),
            default_user: a.default_user.clone(),
            description: a.description.clone(),
            expected_md5: a.checksum.as_ref().map(|c| c.to_ascii_lowercase()),
            expires,
            keep_old: a.keep_old,
        },
    })
}

async fn push(a: PushArgs, file: FileConfig) -> Result<(), CliError> {
    let p = validate_push(&a, &file)?;
    let r = template::push(&p.client, &p.sos, &p.spec)
        .await
        .with_context(|| format!("pushing {} as template `{}`", a.file.display(), a.name))?;
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("serializable"));
    } else {
        let how = match (r.uploaded, r.registered) {
            (false, false) => "reused (same name and checksum; nothing uploaded or registered)",
            _ => "uploaded and registered",
        };
        println!(
            "template {} `{}` in {}: {how}; md5 {}, {} bytes, object {}/{}",
            r.id, r.name, r.zone, r.checksum, r.size, r.bucket, r.key
        );
        for old in &r.replaced {
            println!("replaced (deleted) the older template {old}");
        }
    }
    Ok(())
}

async fn delete(a: DeleteArgs, file: FileConfig) -> Result<(), CliError> {
    let selector = match (&a.name, &a.id) {
        (Some(n), _) => {
            validate_name(n)?;
            Selector::Name(n.clone())
        }
        (None, Some(id)) => Selector::Id(id.trim().parse().map_err(|_| {
            ConfigError::invalid("--id", format!("`{id}` is not a template id (a UUID)"))
        })?),
        (None, None) => unreachable!("clap requires --name or --id"),
    };
    let key = match (&a.bucket, &a.key, &a.name) {
        (None, _, _) => None,
        (Some(_), Some(k), _) => Some(k.clone()),
        (Some(_), None, Some(n)) => Some(format!("{n}.qcow2")),
        (Some(_), None, None) => {
            return Err(ConfigError::invalid("--key", "is required with --id and --bucket").into());
        }
    };
    if let Some(b) = &a.bucket {
        validate_bucket(b)?;
    }
    if let Some(k) = &key {
        validate_key(k)?;
    }
    let endpoint = sos_endpoint(&a.sos, &a.api, &file)?;
    let client = a.api.client(&file)?;
    let store = match &a.bucket {
        Some(b) => Some(sos(&client, &endpoint, b)?),
        None => None,
    };
    let object = store.as_ref().zip(key.as_deref());
    let r = template::delete(&client, &selector, object)
        .await
        .context("deleting the template")?;
    if a.json {
        println!("{}", serde_json::to_string(&r).expect("serializable"));
    } else {
        if r.deleted_templates.is_empty() {
            println!("no such template in {}", r.zone);
        }
        for id in &r.deleted_templates {
            println!("template {id} deleted in {}", r.zone);
        }
        if let Some(o) = &r.deleted_object {
            println!("object {o} deleted");
        }
    }
    Ok(())
}

pub fn validate(a: &RegisterArgs) -> Result<(), ConfigError> {
    validate_name(&a.name)?;
    if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
        return Err(ConfigError::invalid("--url", "must be an http(s) URL"));
    }
    validate_md5("--checksum", &a.checksum)?;
    Ok(())
}

pub async fn run(cmd: TemplateCommand, file: FileConfig) -> Result<(), CliError> {
    match cmd {
        TemplateCommand::Push(a) => push(a, file).await,
        TemplateCommand::Delete(a) => delete(a, file).await,
        TemplateCommand::Register(a) => {
            validate(&a)?;
            let client = a.api.client(&file)?;
            let op = client
                .register_template(&RegisterTemplate {
                    name: a.name.clone(),
                    url: a.url.clone(),
                    checksum: a.checksum.to_ascii_lowercase(),
                    ssh_key_enabled: true,
                    password_enabled: false,
                    boot_mode: Some(a.boot_mode.as_str().into()),
                    default_user: Some(a.default_user.clone()),
                    description: a.description.clone(),
                })
                .await
                .context("registering the template")?;
            if a.no_wait {
                println!("registration accepted: operation {}", op.id);
                return Ok(());
            }
            let done = client
                .wait_operation(&op)
                .await
                .context("waiting for the template")?;
            match done.reference.and_then(|r| r.id) {
                Some(id) => println!(
                    "template {id} registered as `{}` in {}",
                    a.name,
                    client.zone()
                ),
                None => println!("template `{}` registered in {}", a.name, client.zone()),
            }
            Ok(())
        }
    }
}
