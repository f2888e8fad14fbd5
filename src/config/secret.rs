//! Secrets: each given inline, in a file (systemd `LoadCredential=`) or in an environment
//! variable, exactly one of the three.
//!
//! The three keys (`x`, `x_file`, `x_env`) are spelt out in each raw section (`raw.rs`) rather
//! than flattened from one shared struct: serde's `flatten` cannot be combined with
//! `deny_unknown_fields`, and that is what names a misspelt key with its file and line. This
//! function is the one implementation behind every such triple.

use std::path::{Path, PathBuf};

use super::{
    report::{k, Reporter, Seg},
    values::resolve,
};

/// A secret from inline text, a file (systemd `LoadCredential=`) or an environment variable;
/// exactly one may be given.
pub(super) fn secret(
    r: &mut Reporter,
    section: &[Seg],
    name: &str,
    inline: Option<String>,
    file: Option<PathBuf>,
    env: Option<String>,
    base: &Path,
) -> Option<String> {
    let given = inline.is_some() as u8 + file.is_some() as u8 + env.is_some() as u8;
    if given > 1 {
        r.error(
            &[section, &[k(name)]].concat(),
            format!("give one of {name}, {name}_file and {name}_env, not several"),
        );
        return None;
    }
    if let Some(f) = file {
        let path = resolve(base, &f);
        return match crate::files::read_text(&path, crate::files::MAX_SECRET) {
            Ok(s) => Some(s.trim_end_matches(['\r', '\n']).to_string()),
            Err(e) => {
                r.error(
                    &[section, &[k(&format!("{name}_file"))]].concat(),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        };
    }
    if let Some(var) = env {
        return match std::env::var(&var) {
            Ok(s) => Some(s),
            Err(_) => {
                r.error(
                    &[section, &[k(&format!("{name}_env"))]].concat(),
                    format!("environment variable {var} is not set"),
                );
                None
            }
        };
    }
    inline
}
