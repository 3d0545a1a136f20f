use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ProtoError;

/// Languages user code can be written in.
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Sh,
    Python,
    Ts,
    Js,
}

impl Language {
    pub const ALL: [Language; 4] = [Language::Sh, Language::Python, Language::Ts, Language::Js];

    /// Infers the language from a file name's extension.
    pub fn from_file_name(name: &str) -> crate::Result<Self> {
        let ext = name.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
        match ext {
            "sh" => Ok(Language::Sh),
            "py" => Ok(Language::Python),
            "ts" | "mts" => Ok(Language::Ts),
            "js" | "mjs" | "cjs" => Ok(Language::Js),
            _ => Err(ProtoError::NoLanguageForFile(name.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Language::Sh => "sh",
            Language::Python => "python",
            Language::Ts => "ts",
            Language::Js => "js",
        }
    }

    /// Agent endpoint that runs this language (`sh` goes through `/exec`).
    pub fn agent_path(self) -> &'static str {
        match self {
            Language::Sh => "/exec",
            Language::Python => "/run-python",
            Language::Ts => "/run-ts",
            Language::Js => "/run-js",
        }
    }

    /// Extension used when the code is written to a file.
    pub fn extension(self) -> &'static str {
        match self {
            Language::Sh => "sh",
            Language::Python => "py",
            Language::Ts => "ts",
            Language::Js => "js",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = ProtoError;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "sh" | "shell" | "bash" => Ok(Language::Sh),
            "python" | "py" | "python3" => Ok(Language::Python),
            "ts" | "typescript" | "deno" => Ok(Language::Ts),
            "js" | "javascript" | "node" => Ok(Language::Js),
            other => Err(ProtoError::UnknownLanguage(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extensions_map_to_languages() {
        let cases = [
            ("a.sh", Some(Language::Sh)),
            ("dir/x.py", Some(Language::Python)),
            ("x.ts", Some(Language::Ts)),
            ("x.mjs", Some(Language::Js)),
            ("x.rb", None),
            ("noext", None),
            ("", None),
        ];
        for (name, want) in cases {
            assert_eq!(Language::from_file_name(name).ok(), want, "{name}");
        }
    }

    #[test]
    fn names_round_trip() {
        for l in Language::ALL {
            assert_eq!(l.as_str().parse::<Language>().unwrap(), l);
            let json = serde_json::to_string(&l).unwrap();
            assert_eq!(json, format!("\"{}\"", l.as_str()));
        }
        assert!("cobol".parse::<Language>().is_err());
    }
}
