//! `poolpilot template register`: the Terraform provider has no template resource, so images
//! built by Nix are registered with this command (after an upload to object storage).

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use super::{ApiArgs, CliError, FileConfig};
use crate::config::ConfigError;
use crate::exoscale::RegisterTemplate;

#[derive(Debug, Subcommand)]
pub enum TemplateCommand {
    /// Register a qcow2 image (reachable at --url) as a template, and wait until it is ready.
    Register(RegisterArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BootMode {
    Legacy,
    Uefi,
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

pub fn validate(a: &RegisterArgs) -> Result<(), ConfigError> {
    if a.name.trim().is_empty() || a.name.len() > 255 {
        return Err(ConfigError::invalid(
            "--name",
            "must be 1 to 255 characters",
        ));
    }
    if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
        return Err(ConfigError::invalid("--url", "must be an http(s) URL"));
    }
    if a.checksum.len() != 32 || !a.checksum.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ConfigError::invalid(
            "--checksum",
            "must be an MD5 in hex (32 characters), as `md5sum` prints it",
        ));
    }
    Ok(())
}

pub async fn run(cmd: TemplateCommand, file: FileConfig) -> Result<(), CliError> {
    match cmd {
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
                    boot_mode: Some(
                        match a.boot_mode {
                            BootMode::Legacy => "legacy",
                            BootMode::Uefi => "uefi",
                        }
                        .into(),
                    ),
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
