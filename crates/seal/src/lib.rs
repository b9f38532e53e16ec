//! `--sealed`: once the model is loaded, the process gives up the network and every file
//! it was not given, with the kernel's own mechanisms, for every thread, so that "no data
//! leaves this machine" is enforced rather than promised.
//!
//! - **seccomp** (mandatory): a BPF filter, applied to all threads at once (`TSYNC`), makes
//!   the egress system calls fail with `EACCES`: `socket` for any family but `AF_UNIX`,
//!   `connect`, `sendto` with a destination address, `sendmsg`, `sendmmsg`, and
//!   `io_uring_setup` (io_uring could issue the same operations unseen). Accepting
//!   connections on the already bound listener and answering on them (`accept4`, `read`,
//!   `write`, `sendto` without an address) go on. The filter sets `no_new_privs`.
//! - **Landlock** (best effort, reported): the filesystem is limited to reading the paths
//!   given (the model) and writing the directories given (the log directory), and TCP to
//!   binding the listen port (Landlock ABI 4, Linux 6.7) with no TCP connect at all.
//!   Kernels without Landlock keep the seccomp seal, and the report says so.
//!
//! [`self_test`] then proves the seal from inside: an outbound TCP connect, a UDP send and
//! an open outside the allowed paths must each be refused by the kernel.
//!
//! What this does not do: restrict what was already open (the model's mapping, the
//! listener), or stop a process that is already compromised from killing itself; and it
//! is Linux-only (elsewhere [`seal`] refuses, so `--sealed` never silently does nothing).

#![forbid(unsafe_code)]

use std::path::PathBuf;

/// What the sealed process may still touch.
#[derive(Clone, Debug, Default)]
pub struct SealConfig {
    /// Files and directories it may read.
    pub read: Vec<PathBuf>,
    /// Directories it may write in.
    pub write: Vec<PathBuf>,
    /// The TCP port it may bind (the listener's); `None` for none.
    pub bind_port: Option<u16>,
}

/// The mechanisms in force after [`seal`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealReport {
    /// The seccomp egress filter is installed on every thread.
    pub seccomp: bool,
    /// `no_new_privs` is set (required by the filter; also stops setuid escalation).
    pub no_new_privs: bool,
    /// How far Landlock applies: `"full"` (filesystem and TCP), `"partial"` (what the
    /// kernel supports), or `"unavailable"`.
    pub landlock: &'static str,
    /// The kernel's Landlock ABI version, where it has one.
    pub landlock_abi: Option<u32>,
}

impl SealReport {
    /// One line for the start-up log and `/health`: e.g. `seccomp, no_new_privs, landlock
    /// (full, ABI 6)`.
    pub fn mechanisms(&self) -> String {
        let mut m = Vec::new();
        if self.seccomp {
            m.push("seccomp".to_owned());
        }
        if self.no_new_privs {
            m.push("no_new_privs".to_owned());
        }
        match (self.landlock, self.landlock_abi) {
            ("unavailable", _) => m.push("landlock unavailable".to_owned()),
            (level, Some(abi)) => m.push(format!("landlock ({level}, ABI {abi})")),
            (level, None) => m.push(format!("landlock ({level})")),
        }
        m.join(", ")
    }
}

/// Why the process could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The seccomp filter could not be built or installed.
    #[error("cannot install the seccomp filter: {0}")]
    Seccomp(String),
    /// Landlock failed in a way that is not a missing kernel feature.
    #[error("cannot apply the Landlock ruleset: {0}")]
    Landlock(String),
    /// This platform has neither mechanism.
    #[error("--sealed needs Linux (seccomp and Landlock)")]
    Unsupported,
    /// The self-test found a way out.
    #[error("the seal's self-test failed: {0}")]
    SelfTest(String),
}

/// Seals the calling process (every thread). Call it once everything the process needs
/// is open.
pub fn seal(config: &SealConfig) -> Result<SealReport, SealError> {
    imp::seal(config)
}

/// What [`self_test`] found: each probe and how the kernel answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfTest {
    /// `(probe, outcome)` pairs, e.g. `("outbound TCP connect", "denied (EACCES)")`.
    pub probes: Vec<(&'static str, String)>,
}

/// Tries the ways out a sealed process must not have: an outbound TCP connect, a UDP
/// send, and (when Landlock is in force) opening `outside`, a file it was not given.
/// Any that succeeds is an error.
pub fn self_test(report: &SealReport, outside: &std::path::Path) -> Result<SelfTest, SealError> {
    use std::net::{TcpStream, UdpSocket};
    let mut probes = Vec::new();
    let denied = |r: std::io::Result<()>| -> Result<String, String> {
        match r {
            Ok(()) => Err("it succeeded".to_owned()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM)) => {
                Ok(format!("denied ({e})"))
            }
            Err(e) => Err(format!("it failed, but not by the seal: {e}")),
        }
    };
    // A reserved port: only the seal's refusal counts, not a refused connection.
    let tcp = TcpStream::connect_timeout(
        &([127, 0, 0, 1], 9).into(),
        std::time::Duration::from_secs(1),
    )
    .map(drop);
    probes.push((
        "outbound TCP connect",
        denied(tcp).map_err(|e| SealError::SelfTest(format!("outbound TCP connect: {e}")))?,
    ));
    let udp =
        UdpSocket::bind(("127.0.0.1", 0)).and_then(|s| s.send_to(b"x", ("127.0.0.1", 9)).map(drop));
    probes.push((
        "UDP send",
        denied(udp).map_err(|e| SealError::SelfTest(format!("UDP send: {e}")))?,
    ));
    if report.landlock == "unavailable" {
        probes.push((
            "open outside the allowed paths",
            "not checked: no Landlock".to_owned(),
        ));
    } else {
        let open = std::fs::File::open(outside).map(drop);
        probes.push((
            "open outside the allowed paths",
            denied(open)
                .map_err(|e| SealError::SelfTest(format!("open {}: {e}", outside.display())))?,
        ));
    }
    Ok(SelfTest { probes })
}

#[cfg(target_os = "linux")]
mod imp {
    use std::collections::BTreeMap;

    use landlock::{
        Access, AccessFs, AccessNet, LandlockStatus, NetPort, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
    };
    use seccompiler::{
        BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };

    use super::{SealConfig, SealError, SealReport};

    /// The highest Landlock ABI this code asks for; older kernels get what they have.
    const LANDLOCK_ABI: ABI = ABI::V6;

    pub(super) fn seal(config: &SealConfig) -> Result<SealReport, SealError> {
        // Landlock first: its own restrict_self sets no_new_privs too, and it must be in
        // place before seccomp forbids nothing it needs (it makes no network calls).
        let (landlock, landlock_abi) = landlock(config)?;
        seccomp()?;
        Ok(SealReport {
            seccomp: true,
            no_new_privs: true,
            landlock,
            landlock_abi,
        })
    }

    fn seccomp() -> Result<(), SealError> {
        let err = |e: &dyn std::fmt::Display| SealError::Seccomp(e.to_string());
        let cond = |arg, op, value| {
            SeccompCondition::new(arg, SeccompCmpArgLen::Qword, op, value).map_err(|e| err(&e))
        };
        let rule = |conds| SeccompRule::new(conds).map_err(|e| err(&e));
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        // New sockets of any family but AF_UNIX (no IP, no netlink, no packet sockets).
        rules.insert(
            libc::SYS_socket,
            vec![rule(vec![cond(
                0,
                SeccompCmpOp::Ne,
                libc::AF_UNIX as u64,
            )?])?],
        );
        // Any connect, and any send that names its destination.
        rules.insert(libc::SYS_connect, vec![]);
        rules.insert(
            libc::SYS_sendto,
            vec![rule(vec![cond(4, SeccompCmpOp::Ne, 0)?])?],
        );
        rules.insert(libc::SYS_sendmsg, vec![]);
        rules.insert(libc::SYS_sendmmsg, vec![]);
        rules.insert(libc::SYS_io_uring_setup, vec![]);
        let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| err(&e))?;
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EACCES as u32),
            arch,
        )
        .map_err(|e| err(&e))?;
        let program: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| err(&e))?;
        seccompiler::apply_filter_all_threads(&program).map_err(|e| err(&e))
    }

    fn landlock(config: &SealConfig) -> Result<(&'static str, Option<u32>), SealError> {
        let err = |e: &dyn std::fmt::Display| SealError::Landlock(e.to_string());
        let abi = LANDLOCK_ABI;
        let mut ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(abi))
            .map_err(|e| err(&e))?
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| err(&e))?
            .create()
            .map_err(|e| err(&e))?;
        for path in &config.read {
            let fd = PathFd::new(path).map_err(|e| err(&e))?;
            // A file takes only file rights (directory rights on it would be dropped,
            // and the ruleset reported as partly enforced).
            let read = if path.is_dir() {
                AccessFs::from_read(abi)
            } else {
                AccessFs::from_read(abi) & AccessFs::from_file(abi)
            };
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, read))
                .map_err(|e| err(&e))?;
        }
        for path in &config.write {
            let fd = PathFd::new(path).map_err(|e| err(&e))?;
            ruleset = ruleset
                .add_rule(PathBeneath::new(fd, AccessFs::from_all(abi)))
                .map_err(|e| err(&e))?;
        }
        if let Some(port) = config.bind_port {
            ruleset = ruleset
                .add_rule(NetPort::new(port, AccessNet::BindTcp))
                .map_err(|e| err(&e))?;
        }
        let status = ruleset.restrict_self().map_err(|e| err(&e))?;
        let abi = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => Some(effective_abi as u32),
            _ => None,
        };
        let level = match status.ruleset {
            RulesetStatus::FullyEnforced => "full",
            RulesetStatus::PartiallyEnforced => "partial",
            RulesetStatus::NotEnforced => "unavailable",
        };
        Ok((level, abi))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::{SealConfig, SealError, SealReport};

    pub(super) fn seal(_: &SealConfig) -> Result<SealReport, SealError> {
        Err(SealError::Unsupported)
    }
}
