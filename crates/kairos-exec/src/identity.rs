//! `run_as`: the user and groups a process switches to before `exec`.
//!
//! Names are looked up through the C library (`getpwnam_r`, `getgrnam_r`, `getgrouplist`), so
//! users from NSS sources (LDAP, systemd-homed) work too. The lookups may block (a slow
//! directory service): they run on the attempt's blocking thread, with the rest of the
//! preparation. The child switches with raw system calls (see `crate::vfork`), never with the C
//! library's `setuid`, which in a threaded program signals every thread.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_char};
use std::io;

use kairos_core::spec::RunAs;

/// Who the child becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the user's, as `initgroups` would set them, with `gid`).
    pub groups: Vec<u32>,
    pub user: String,
    pub home: Option<String>,
    /// The child changes its credentials (a root server). A server that is not root can only
    /// "switch" to itself, which needs no change (and `setgroups` would be refused).
    pub switch: bool,
}

/// A user's entry.
struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: Option<String>,
}

/// Resolves `run_as` for a server running as `server_uid`. Errors are the attempt's message.
pub(crate) fn resolve(run_as: &RunAs, server_uid: u32) -> Result<Identity, String> {
    let user = lookup_user(&run_as.user)?;
    let gid = match &run_as.group {
        Some(group) => lookup_group(group)?,
        None => user.gid,
    };
    // `(uid_t) -1` means "leave unchanged" to `setresuid`: the task would stay root.
    if user.uid == u32::MAX || gid == u32::MAX {
        return Err(format!(
            "run_as: user `{}` has the id 4294967295, which cannot be switched to",
            run_as.user
        ));
    }
    if server_uid != 0 && (user.uid != server_uid || gid != current_gid()) {
        return Err(format!(
            "run_as: the server runs as uid {server_uid} and cannot switch to user `{}`; \
             run the server as root to use run_as",
            run_as.user
        ));
    }
    let mut groups = group_list(&user.name, gid);
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Identity {
        uid: user.uid,
        gid,
        groups,
        user: user.name,
        home: user.home,
        switch: server_uid == 0,
    })
}

/// The effective uid of the server.
pub(crate) fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn current_gid() -> u32 {
    rustix::process::getegid().as_raw()
}

/// Size of the buffer for one `getpwnam_r` / `getgrnam_r` answer (grown on `ERANGE`).
const INITIAL_BUFFER: usize = 4096;
const MAX_BUFFER: usize = 1 << 20;

fn lookup_user(name: &str) -> Result<Passwd, String> {
    let c_name = CString::new(name).map_err(|_| format!("run_as.user: `{name}` holds NUL"))?;
    let mut buf = vec![0 as c_char; INITIAL_BUFFER];
    loop {
        // SAFETY: `passwd` is plain C data for which all-zero bytes are valid; `getpwnam_r`
        // writes into it and into `buf` (of the length given), and sets `found` to null or to
        // `&mut pwd`. The strings it points to live in `buf`, read before `buf` changes.
        let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let rc = unsafe {
            libc::getpwnam_r(
                c_name.as_ptr(),
                &mut pwd,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "run_as.user: cannot look up `{name}`: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() {
            // A numeric id without an entry is still a user to run as.
            return match name.parse::<u32>() {
                Ok(uid) => Ok(Passwd {
                    name: name.to_owned(),
                    uid,
                    gid: uid,
                    home: None,
                }),
                Err(_) => Err(format!("run_as.user: no user `{name}` on this machine")),
            };
        }
        // SAFETY: `found` is `&mut pwd`, filled in; its strings are NUL-terminated in `buf`.
        let (user, home) = unsafe { (c_str(pwd.pw_name), c_str(pwd.pw_dir)) };
        return Ok(Passwd {
            name: user.unwrap_or_else(|| name.to_owned()),
            uid: pwd.pw_uid,
            gid: pwd.pw_gid,
            home: home.filter(|h| !h.is_empty()),
        });
    }
}

fn lookup_group(name: &str) -> Result<u32, String> {
    let c_name = CString::new(name).map_err(|_| format!("run_as.group: `{name}` holds NUL"))?;
    let mut buf = vec![0 as c_char; INITIAL_BUFFER];
    loop {
        // SAFETY: as in `lookup_user`, with `group` and `getgrnam_r`.
        let mut grp: libc::group = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::group = std::ptr::null_mut();
        let rc = unsafe {
            libc::getgrnam_r(
                c_name.as_ptr(),
                &mut grp,
                buf.as_mut_ptr(),
                buf.len(),
                &mut found,
            )
        };
        if rc == libc::ERANGE && buf.len() < MAX_BUFFER {
            buf.resize(buf.len() * 2, 0);
            continue;
        }
        if rc != 0 {
            return Err(format!(
                "run_as.group: cannot look up `{name}`: {}",
                io::Error::from_raw_os_error(rc)
            ));
        }
        if found.is_null() {
            return name
                .parse::<u32>()
                .map_err(|_| format!("run_as.group: no group `{name}` on this machine"));
        }
        return Ok(grp.gr_gid);
    }
}

/// Elsewhere than Linux, only the primary group.
#[cfg(not(target_os = "linux"))]
fn group_list(_user: &str, gid: u32) -> Vec<u32> {
    vec![gid]
}

/// The user's groups as `initgroups` would set them (only `gid` if they cannot be listed).
#[cfg(target_os = "linux")]
fn group_list(user: &str, gid: u32) -> Vec<u32> {
    let Ok(c_user) = CString::new(user) else {
        return vec![gid];
    };
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut count = libc::c_int::try_from(groups.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `groups` has room for `count` entries; `getgrouplist` writes at most that
        // many and sets `count` to the number it has (or needs, returning -1).
        let rc =
            unsafe { libc::getgrouplist(c_user.as_ptr(), gid, groups.as_mut_ptr(), &mut count) };
        let count = usize::try_from(count).unwrap_or(0);
        if rc >= 0 {
            groups.truncate(count);
            return groups;
        }
        if count <= groups.len() || count > 65536 {
            return vec![gid];
        }
        groups.resize(count, 0);
    }
}

/// # Safety
///
/// `ptr` is null or a NUL-terminated string.
unsafe fn c_str(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: per the function's contract.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail by panicking")]
mod tests {
    use super::*;

    fn run_as(user: &str, group: Option<&str>) -> RunAs {
        RunAs {
            user: user.into(),
            group: group.map(str::to_owned),
        }
    }

    #[test]
    fn users_and_groups_resolve_by_name_and_id() {
        let root = resolve(&run_as("root", None), 0).unwrap();
        assert_eq!((root.uid, root.gid, root.user.as_str()), (0, 0, "root"));
        assert!(root.groups.contains(&0));
        let nobody = resolve(&run_as("nobody", None), 0).unwrap();
        assert_eq!(nobody.uid, 65534);
        let numeric = resolve(&run_as("4242", Some("4243")), 0).unwrap();
        assert_eq!((numeric.uid, numeric.gid), (4242, 4243));
        let err = resolve(&run_as("no-such-user-kairos", None), 0).unwrap_err();
        assert!(err.contains("no user `no-such-user-kairos`"), "{err}");
        let err = resolve(&run_as("root", Some("no-such-group-kairos")), 0).unwrap_err();
        assert!(err.contains("no group"), "{err}");
        // `(uid_t) -1` would leave a root task root.
        let err = resolve(&run_as("4294967295", Some("65534")), 0).unwrap_err();
        assert!(err.contains("cannot be switched to"), "{err}");
        // A server that is not root may "switch" to itself: no credential change.
        let me = rustix::process::geteuid().as_raw();
        let own = resolve(
            &run_as(
                &me.to_string(),
                Some(&rustix::process::getegid().as_raw().to_string()),
            ),
            me,
        );
        if me != 0 {
            assert!(!own.unwrap().switch);
        }
        // A server that is not root cannot switch users.
        let err = resolve(&run_as("root", None), 1000).unwrap_err();
        assert!(err.contains("cannot switch"), "{err}");
    }
}
