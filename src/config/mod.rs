//! Configuration: the YAML file (`raw`) compiled once into a validated model (`model`).
//!
//! Everything that can be wrong with a config is found here, at start or reload, and reported
//! all at once: YAML syntax and type errors as `FILE:LINE:COL: message`, the rest as a field
//! path such as `routes[imggo].allow_ips[1]: message`. Nothing in the request path parses config.

mod compile;
mod condition;
mod destination;
pub mod endpoint;
pub mod env;
mod model;
mod netset;
pub mod raw;
pub mod units;

pub use condition::Condition;
pub use model::*;
pub use netset::NetSet;
pub use raw::{OnError, Otherwise};

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// YAML syntax or type error, located in the file.
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    /// A value that parsed but is not acceptable, located by its field path.
    Field { path: String, message: String },
    /// The file itself could not be read.
    Unreadable(String),
}

/// Every problem found in one config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p {
                Problem::Syntax {
                    line,
                    column,
                    message,
                } => write!(f, "{}:{line}:{column}: {message}", self.file.display())?,
                Problem::Field { path, message } => write!(f, "{path}: {message}")?,
                Problem::Unreadable(message) => write!(f, "{}: {message}", self.file.display())?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(file: &Path, problems: Vec<Problem>) -> Self {
        ConfigError {
            file: file.to_path_buf(),
            problems,
        }
    }
}

/// Reads and compiles `file`, expanding `${VAR}` from the process environment.
pub fn load(file: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        ConfigError::new(
            file,
            vec![Problem::Unreadable(format!("cannot read the config: {e}"))],
        )
    })?;
    from_text(&text, file, &|name| std::env::var(name).ok())
}

/// Compiles config `text` as if read from `file` (relative paths resolve against its folder).
pub fn from_text(
    text: &str,
    file: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigError> {
    let raw = parse(text).map_err(|p| ConfigError::new(file, vec![p]))?;
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    compile::compile(raw, &base, file, env).map_err(|problems| ConfigError::new(file, problems))
}

/// YAML text to the raw structs; a failure carries its line and column.
pub fn parse(text: &str) -> Result<raw::RawConfig, Problem> {
    serde_yaml_ng::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((1, 1), |l| (l.line(), l.column()));
        let mut message = e.to_string();
        // serde_yaml appends " at line L column C"; the prefix already says where.
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        Problem::Syntax {
            line,
            column,
            message,
        }
    })
}
