//! Meter profiles: the built-in ones and a directory of the user's.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use meterd_protocols::profile::Profile;

/// Built-in profiles plus those from `profiles_dir` (a user file overrides a built-in one of
/// the same name).
#[derive(Debug, Default)]
pub struct ProfileSet {
    pub profiles: BTreeMap<String, Arc<Profile>>,
}

impl ProfileSet {
    pub fn builtin() -> ProfileSet {
        let mut set = ProfileSet::default();
        for p in Profile::builtin() {
            match p {
                Ok(p) => {
                    set.profiles.insert(p.name.clone(), Arc::new(p));
                }
                // The protocols crate's tests reject a broken built-in; never drop one silently.
                Err(e) => tracing::error!(error = %e, "built-in profile skipped"),
            }
        }
        set
    }

    /// Built-ins plus every `*.toml` in `dir`; problems come back as strings naming the file.
    pub fn with_dir(dir: &Path) -> (ProfileSet, Vec<String>) {
        let mut set = ProfileSet::builtin();
        let mut problems = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("cannot read {}: {e}", dir.display()));
                return (set, problems);
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let origin = f.display().to_string();
            match crate::files::read_text(&f, crate::files::MAX_TEXT) {
                Ok(text) => match Profile::parse(&text, &origin) {
                    Ok(p) => {
                        set.profiles.insert(p.name.clone(), Arc::new(p));
                    }
                    Err(e) => problems.extend(e.to_string().lines().map(String::from)),
                },
                Err(e) => problems.push(format!("{origin}: {e}")),
            }
        }
        (set, problems)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.get(name)
    }
}
