//! Giving back what glibc's allocator keeps after a burst.
//!
//! glibc's `free` returns memory to the system only from the top of a heap. Freed blocks below
//! a live one stay resident: after a burst of requests (each with its buffers and futures)
//! across connections that stay open, every connection's few live blocks pin the pages
//! around them, and the process keeps its peak. The mesh load benchmark's idle scenario
//! shows it: 10 000 connections that each carried one request left the client-side proxy
//! 151 MiB above its start, of which `malloc_trim` gave back 104 MiB (BENCHMARKS.md, stop 47).
//!
//! [`start`] runs a thread that, every [`PERIOD`], compares the process's anonymous resident
//! memory with what the allocator has in use, and when the difference (the slack) has grown
//! past an allowance, calls `malloc_trim(0)`, which releases the free pages anywhere in every
//! arena. The allowance is [`ALLOWANCE`] above the slack the last trim could not release
//! (thread stacks, the runtime's own mappings, pages shared by live and free blocks), so a
//! trim that releases little is not repeated until as much again has been freed.
//!
//! This is the workspace's only crate with unsafe code: the two calls into glibc below.

use std::time::{Duration, Instant};

/// How often the slack is checked: a read of `/proc/self/statm` and `mallinfo2`, which walks
/// the allocator's free lists under each arena's lock.
pub const PERIOD: Duration = Duration::from_secs(5);

/// The slack tolerated above what the last trim left.
pub const ALLOWANCE: usize = 8 << 20;

/// The process's anonymous resident memory in bytes (resident minus file-backed and shared),
/// from `/proc/self/statm`.
pub fn anon_resident() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let mut fields = statm.split_ascii_whitespace().skip(1);
    let resident: usize = fields.next()?.parse().ok()?;
    let shared: usize = fields.next()?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()?;
    Some(resident.saturating_sub(shared) * usize::try_from(page).ok()?)
}

/// What the allocator has handed out and not had back, in bytes: blocks in its arenas and
/// blocks mapped on their own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn heap_in_use() -> Option<usize> {
    #[allow(unsafe_code)]
    // SAFETY: mallinfo2 takes no arguments and returns a struct by value; glibc takes each
    // arena's lock while it counts.
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks + info.hblkhd)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn heap_in_use() -> Option<usize> {
    None
}

/// Asks glibc to release every free page of every arena; whether it released any.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim_now() -> bool {
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim takes no pointers; it works on glibc's own free lists under each
    // arena's lock.
    let released = unsafe { libc::malloc_trim(0) };
    released == 1
}

/// Other allocators (musl's) return freed memory themselves, or have no such call.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim_now() -> bool {
    false
}

/// When to trim, from the slack (anonymous resident memory minus the allocator's in use).
#[derive(Debug)]
pub struct Policy {
    /// The slack past which the next check trims.
    allowance: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowance: ALLOWANCE,
        }
    }
}

impl Policy {
    /// Whether a check that measured `slack` should trim.
    pub fn should_trim(&self, slack: usize) -> bool {
        slack > self.allowance
    }

    /// After a trim that left `slack`: the next trims once as much again as the allowance has
    /// been freed on top of it.
    pub fn trimmed(&mut self, slack: usize) {
        self.allowance = slack.saturating_add(ALLOWANCE);
    }
}

/// The slack now: anonymous resident memory the allocator does not account as in use.
pub fn slack() -> Option<usize> {
    Some(anon_resident()?.saturating_sub(heap_in_use()?))
}

/// One check: trims when the slack has grown past the policy's allowance.
fn check(policy: &mut Policy) {
    let Some(before) = slack() else { return };
    if !policy.should_trim(before) {
        return;
    }
    let started = Instant::now();
    let released = trim_now();
    let after = slack().unwrap_or(before);
    policy.trimmed(after);
    tracing::debug!(
        released,
        slack_before_kib = before >> 10,
        slack_after_kib = after >> 10,
        took_us = started.elapsed().as_micros() as u64,
        "returned freed memory to the system"
    );
}

/// Starts the trimming thread, once per process; later calls do nothing. Off glibc, or when
/// the figures cannot be read, it does not start.
pub fn start() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        if slack().is_none() {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("remora-trim".into())
            .stack_size(64 << 10)
            .spawn(|| {
                let mut policy = Policy::default();
                loop {
                    std::thread::sleep(PERIOD);
                    check(&mut policy);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the allocator's trimming thread");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_rises_over_what_a_trim_left() {
        let mut p = Policy::default();
        assert!(!p.should_trim(ALLOWANCE));
        assert!(p.should_trim(ALLOWANCE + 1));
        // A trim that left 20 MiB (live pages, stacks): no trim again until 8 MiB more.
        p.trimmed(20 << 20);
        assert!(!p.should_trim(28 << 20));
        assert!(p.should_trim((28 << 20) + 1));
        // A later trim that left little lowers it again.
        p.trimmed(1 << 20);
        assert!(p.should_trim(ALLOWANCE + (1 << 20) + 1));
        assert!(!p.should_trim(ALLOWANCE));
    }

    /// Blocks freed between live ones stay resident until a trim releases them.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn a_trim_releases_blocks_freed_between_live_ones() {
        const BLOCKS: usize = 4096;
        const BIG: usize = 16 << 10; // 64 MiB in all, each block under glibc's mmap threshold
        let start = anon_resident().expect("statm");
        let mut live = Vec::with_capacity(BLOCKS);
        let mut freed = Vec::with_capacity(BLOCKS);
        for i in 0..BLOCKS {
            // Written, so that the pages are resident (a zeroed block may not be touched).
            freed.push(vec![(i % 251) as u8 + 1; BIG]);
            live.push(Box::new([i as u8; 64]));
        }
        let peak = anon_resident().expect("statm");
        assert!(peak > start + (48 << 20), "{start} → {peak}");
        drop(freed);
        let kept = anon_resident().expect("statm");
        assert!(
            kept > start + (48 << 20),
            "glibc returned the blocks itself: {start} → {peak} → {kept}"
        );
        assert!(slack().expect("slack") > 48 << 20);
        assert!(trim_now());
        let trimmed = anon_resident().expect("statm");
        assert!(
            // Each 16 KiB hole straddles its neighbours' pages: about three of its four pages
            // can go.
            trimmed + (32 << 20) < kept,
            "the trim released too little: {kept} → {trimmed}"
        );
        // The live blocks are untouched.
        assert!(live.iter().enumerate().all(|(i, b)| b[63] == i as u8));
    }
}
