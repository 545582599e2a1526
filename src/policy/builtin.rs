//! The built-in policies, by name: the documented files of `examples/policies/`, compiled in so
//! that `--policy target-tracking` works from any directory. A `--policy` value that names one
//! of them (no `/`, no `.toml`) is that policy; anything else is a file path.

use std::path::PathBuf;

/// (name, text) of every built-in policy.
pub const BUILTIN: [(&str, &str); 6] = [
    (
        "default",
        include_str!("../../examples/policies/default.toml"),
    ),
    (
        "course",
        include_str!("../../examples/policies/course.toml"),
    ),
    (
        "target-tracking",
        include_str!("../../examples/policies/target-tracking.toml"),
    ),
    ("hpa", include_str!("../../examples/policies/hpa.toml")),
    (
        "office-hours",
        include_str!("../../examples/policies/office-hours.toml"),
    ),
    (
        "demo-in-flight",
        include_str!("../../examples/policies/demo-in-flight.toml"),
    ),
];

/// A policy's text and where it came from.
#[derive(Clone, Debug)]
pub struct Source {
    /// The built-in's name or the file's path, for messages.
    pub label: String,
    pub text: String,
    /// The file, when it is one (a built-in cannot be reloaded).
    pub path: Option<PathBuf>,
}

impl Source {
    /// The policy, or every problem in one line, led by where it came from.
    pub fn parse(&self) -> Result<crate::policy::file::PolicyFile, String> {
        crate::policy::file::PolicyFile::parse(&self.text).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
            format!("{}: {}", self.label, list.join("; "))
        })
    }
}

pub fn names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

pub fn get(name: &str) -> Option<&'static str> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// A built-in by name, or the file at `arg`.
pub fn load(arg: &str) -> Result<Source, String> {
    let looks_like_name = !arg.contains('/') && !arg.ends_with(".toml");
    if looks_like_name {
        return match get(arg) {
            Some(t) => Ok(Source {
                label: format!("built-in `{arg}`"),
                text: t.to_owned(),
                path: None,
            }),
            None => Err(format!(
                "`{arg}` is neither a built-in policy ({}) nor a file path (give ./{arg} for a file here)",
                names().join(", ")
            )),
        };
    }
    let path = PathBuf::from(arg);
    std::fs::read_to_string(&path)
        .map(|text| Source {
            label: path.display().to_string(),
            text,
            path: Some(path.clone()),
        })
        .map_err(|e| format!("cannot read {arg}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::file::PolicyFile;

    #[test]
    fn every_builtin_is_valid_and_named_as_its_file() {
        for (name, text) in BUILTIN {
            let p = PolicyFile::parse(text).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert_eq!(p.policy.name, name);
        }
    }

    #[test]
    fn names_and_paths_resolve_apart() {
        assert!(load("target-tracking").unwrap().path.is_none());
        let e = load("nope").unwrap_err();
        assert!(e.contains("built-in") && e.contains("course"), "{e}");
        assert!(load("./nope.toml").unwrap_err().contains("cannot read"));
    }
}
