//! The fixed catalog of the simulated zone: the standard instance types and a public template.
//! Ids are constants so that a simulator restarted with the same seed answers the same ids.

use uuid::Uuid;

use crate::config::Zone;
use crate::exoscale::models::{InstanceType, Template};

const GIB: u64 = 1024 * 1024 * 1024;

/// The standard family as Exoscale sells it (CPU count, memory).
const STANDARD: [(&str, u64, u64); 7] = [
    ("micro", 1, GIB / 2),
    ("tiny", 1, GIB),
    ("small", 2, 2 * GIB),
    ("medium", 2, 4 * GIB),
    ("large", 4, 8 * GIB),
    ("extra-large", 4, 16 * GIB),
    ("huge", 8, 32 * GIB),
];

pub fn instance_types(zone: Zone) -> Vec<InstanceType> {
    STANDARD
        .iter()
        .enumerate()
        .map(|(i, (size, cpus, memory))| InstanceType {
            id: Uuid::from_u128(0x5e1a_0000_0000_4000_8000_0000_0000_0000 + i as u128 + 1),
            family: "standard".into(),
            size: (*size).into(),
            cpus: *cpus,
            memory: *memory,
            authorized: Some(true),
            zones: vec![zone.name().to_owned()],
        })
        .collect()
}

pub fn public_templates(zone: Zone) -> Vec<Template> {
    vec![Template {
        id: Uuid::from_u128(0x7e3b_0000_0000_4000_8000_0000_0000_0001),
        name: "Linux Debian 12 (Bookworm) 64-bit".into(),
        description: None,
        family: Some("debian".into()),
        visibility: Some("public".into()),
        boot_mode: Some("legacy".into()),
        checksum: None,
        url: None,
        default_user: Some("debian".into()),
        ssh_key_enabled: Some(true),
        password_enabled: Some(false),
        size: Some(10 * GIB),
        created_at: None,
        zones: vec![zone.name().to_owned()],
    }]
}
