//! limpet's own resources running out. A socket that cannot be created for lack of
//! file descriptors, a local port or memory says nothing about the backend it was
//! meant for: such failures are counted apart (`limpet_local_errors_total{kind}`),
//! answered with a 503, and never count against a backend's health.

use std::error::Error as StdError;

use pingora_error::Error;

/// Which of limpet's resources ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LocalError {
    /// EMFILE, ENFILE: the process's or the system's file table is full.
    FileDescriptors,
    /// EADDRNOTAVAIL: no local port is left for a connection to the backend.
    Ports,
    /// ENOBUFS, ENOMEM: the kernel could not allocate the socket.
    Memory,
}

impl LocalError {
    /// The `kind` label (one of `limpet_metrics::LOCAL_ERROR_KINDS`).
    pub fn as_str(self) -> &'static str {
        match self {
            LocalError::FileDescriptors => "file_descriptors",
            LocalError::Ports => "ports",
            LocalError::Memory => "memory",
        }
    }

    /// The local resource `e` (a connect error, with its chain of causes) ran out of,
    /// if that is what it is.
    pub fn of(e: &Error) -> Option<Self> {
        let mut cause: Option<&(dyn StdError + 'static)> = Some(e.root_cause());
        while let Some(c) = cause {
            if let Some(errno) = c
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.raw_os_error())
            {
                return Self::of_errno(errno);
            }
            cause = c.source();
        }
        None
    }

    fn of_errno(errno: i32) -> Option<Self> {
        match errno {
            libc::EMFILE | libc::ENFILE => Some(LocalError::FileDescriptors),
            libc::EADDRNOTAVAIL => Some(LocalError::Ports),
            libc::ENOBUFS | libc::ENOMEM => Some(LocalError::Memory),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use pingora_error::{ErrorType, OrErr};

    use super::*;

    /// The chain Pingora builds for a socket it could not create.
    fn socket_error(errno: i32) -> Box<Error> {
        let io: std::io::Result<()> = Err(std::io::Error::from_raw_os_error(errno));
        let inner = io
            .or_err(ErrorType::SocketError, "failed to create socket")
            .unwrap_err();
        Error::because(ErrorType::InternalError, "Fail to connect to backend", inner)
    }

    #[test]
    fn local_resources_are_told_apart_from_backend_failures() {
        let kind = |errno| LocalError::of(&socket_error(errno));
        assert_eq!(kind(libc::EMFILE), Some(LocalError::FileDescriptors));
        assert_eq!(kind(libc::ENFILE), Some(LocalError::FileDescriptors));
        assert_eq!(kind(libc::EADDRNOTAVAIL), Some(LocalError::Ports));
        assert_eq!(kind(libc::ENOBUFS), Some(LocalError::Memory));
        assert_eq!(kind(libc::ECONNREFUSED), None);
        assert_eq!(kind(libc::ETIMEDOUT), None);
        let plain = Error::new(ErrorType::ConnectRefused);
        assert_eq!(LocalError::of(&plain), None);
    }

    #[test]
    fn every_kind_is_a_metric_label() {
        for kind in [LocalError::FileDescriptors, LocalError::Ports, LocalError::Memory] {
            assert!(limpet_metrics::LOCAL_ERROR_KINDS.contains(&kind.as_str()));
        }
    }
}
