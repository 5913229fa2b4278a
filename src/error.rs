//! The library's error type: every fallible call returns [`Result`].

/// Everything that can go wrong in `minference`, with the argument and the values seen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is out of its domain (a shape, a budget, a pattern spec ...).
    #[error("invalid argument `{arg}`: {msg}")]
    InvalidArgument {
        /// The argument's name as the caller knows it (`q`, `--pattern`, `top_k` ...).
        arg: String,
        /// What was wrong, with the values seen.
        msg: String,
    },
    /// The backend was not compiled into this build.
    #[error("backend `{backend}` is not compiled in: rebuild with `--features {feature}`")]
    NotCompiled {
        /// Backend name.
        backend: &'static str,
        /// The cargo feature that enables it.
        feature: &'static str,
    },
    /// The backend is compiled in but cannot run here (no driver, no adapter, no GPU).
    #[error("backend `{backend}` is unavailable: {reason}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// Why (driver missing, no adapter ...).
        reason: String,
    },
    /// The backend runs, but not this configuration (dtype, head dim, size limit ...).
    #[error("backend `{backend}` does not support {what}")]
    Unsupported {
        /// Backend name.
        backend: &'static str,
        /// What is unsupported, with the values seen.
        what: String,
    },
    /// A device operation (compile, launch, copy) failed.
    #[error("backend `{backend}`, kernel `{kernel}`: {msg}")]
    Device {
        /// Backend name.
        backend: &'static str,
        /// Kernel or operation name.
        kernel: String,
        /// The device's message.
        msg: String,
    },
    /// A MInference per-head config could not be read.
    #[error("config {path}: {msg}")]
    Config {
        /// Where the config came from.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// A safetensors file could not be read or written.
    #[error("safetensors {path}: {msg}")]
    SafeTensors {
        /// The file.
        path: String,
        /// What was wrong.
        msg: String,
    },
    /// An I/O error, with the path involved.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Shorthand for [`Error::InvalidArgument`].
pub fn invalid(arg: impl Into<String>, msg: impl Into<String>) -> Error {
    Error::InvalidArgument {
        arg: arg.into(),
        msg: msg.into(),
    }
}
