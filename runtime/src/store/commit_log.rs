//! The commit log: a batch on redb is durable after one small write and one `fdatasync`.
//!
//! A durable redb commit writes every page the batch changed — for one audited request eleven
//! pages and the header (docs/BENCHMARKS.md, eleventh pass) — and then syncs the file. With the
//! log, the writer's batch instead
//!
//! 1. runs its mutations in a redb transaction, each `put`/`remove` also recorded as bytes
//!    (table name, key and value in redb's encodings; [`Recorder`]);
//! 2. appends the recorded bytes as one record (sequence number, the log's generation, a
//!    CRC-32C) to this file, preallocated and overwritten in place, and syncs it
//!    (`fdatasync`: data only, the file's size and blocks never change);
//! 3. commits the redb transaction without a sync (`Durability::None`): readers see it now, the
//!    pages stay in redb's write buffer;
//! 4. only then answers its callers.
//!
//! Every such commit also stores its sequence number in the `meta` table (not recorded), so a
//! durable redb state names the last record it contains. A **checkpoint** is a durable redb
//! commit (every non-durable commit before it becomes durable with it) after which the log
//! starts over at its beginning with a new random generation: when a record would not fit in
//! what is left of the file, that batch itself commits durably instead of being logged; when
//! the writer has been idle for a while; and when the store closes.
//!
//! **Recovery** ([`recover`]), at every open before anything else: redb comes back at its last
//! durable commit, which names sequence `s`. The log is read from its beginning as long as the
//! records are whole (the CRC), of the first record's generation, and numbered one after
//! another; those after `s` are applied, in order, in one durable transaction, which stores the
//! last number; then the log starts over. A record is written only after the one before it was
//! synced, so the records read are exactly the batches that were answered (and at most one
//! more, whose callers never heard back). A put or remove applied twice leaves the same state,
//! so a crash during recovery is recovered by the next open. A record from an earlier
//! generation can never be taken for a newer one: the generation is 16 random bytes drawn at
//! each start-over, which earlier contents (audit rows carry caller-chosen bytes) cannot know.
//!
//! A log that starts after the store's last record (the store file restored from an older
//! copy without its log) is refused: applying it would skip batches.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::StoreError;
use super::tables::{
    ReadableTable, StoreKey, TableDefinition, TableVisitor, Value, WriteTransaction,
};

/// The log file's size: written once with zeros, then overwritten in place. It bounds the
/// checkpoint: a full log's checkpoint writes every redb page changed since the last one and
/// syncs them, while the batches behind it wait — about 7 ms at 4 MiB with 64 signed requests
/// in flight, against 26 ms at 16 MiB (docs/BENCHMARKS.md, thirteenth pass).
pub const LOG_BYTES: u64 = 4 << 20;
/// Records start on page boundaries: a record being written never shares a page with one
/// already answered.
const PAGE: u64 = 4096;
const MAGIC: [u8; 4] = *b"AKCL";
const VERSION: u32 = 1;
/// magic, version, generation, sequence, payload length, CRC-32C.
const HEADER: usize = 4 + 4 + 16 + 8 + 4 + 4;

/// The `meta` key of the last record a redb state contains.
pub(crate) const META_LOG_SEQ: &str = "commit_log_seq";

const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// The log beside a redb file.
pub struct CommitLog {
    state: Mutex<LogState>,
    checkpoints: AtomicU64,
    bytes: AtomicU64,
}

impl std::fmt::Debug for CommitLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommitLog").finish_non_exhaustive()
    }
}

struct LogState {
    file: File,
    generation: [u8; 16],
    /// Where the next record goes.
    offset: u64,
    /// The last sequence number written (or contained in the last checkpoint).
    last_seq: u64,
    /// Records since the last start-over.
    records: u64,
    /// A write or sync failed, or a redb commit failed after its record was synced: nothing
    /// more is written until the process restarts and recovers (fail-stop, as after a crash).
    failed: bool,
    buffer: Vec<u8>,
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

impl CommitLog {
    /// Opens (creating and zero-filling when missing or short, mode 0600) the log at `path`;
    /// answers it with the records it holds, in order.
    pub(crate) fn open(path: &Path) -> Result<(Self, Vec<Record>), StoreError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(StoreError::io)?;
        let len = file.metadata().map_err(StoreError::io)?.len();
        if len < LOG_BYTES {
            // Written, not only allocated: overwriting written blocks changes no metadata, so
            // each record's `fdatasync` flushes the record alone.
            let zeros = vec![0u8; (LOG_BYTES - len) as usize];
            file.write_all_at(&zeros, len).map_err(StoreError::io)?;
            file.sync_all().map_err(StoreError::io)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(StoreError::io)?;
            }
        }
        // A log written when the file was larger (16 MiB before the thirteenth pass) is read to
        // its end: its records past LOG_BYTES were answered too. New records stay within
        // LOG_BYTES.
        let size = len.max(LOG_BYTES);
        let records = scan(|offset, len| {
            let end = offset.checked_add(len)?;
            (end as u64 <= size).then_some(())?;
            let mut bytes = vec![0u8; len];
            file.read_exact_at(&mut bytes, offset as u64).ok()?;
            Some(bytes)
        });
        let log = Self {
            state: Mutex::new(LogState {
                file,
                generation: [0; 16],
                offset: 0,
                last_seq: 0,
                records: 0,
                failed: true,
                buffer: Vec::with_capacity(PAGE as usize),
            }),
            checkpoints: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        Ok((log, records))
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, LogState>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Corrupt("commit log lock poisoned".into()))
    }

    /// Starts over at the beginning with a new generation, after a durable redb commit that
    /// contains every record up to `last_seq`. The first record's magic is cleared (not
    /// synced: the records are contained in the store either way), so the next open reads
    /// nothing it would skip.
    pub(crate) fn start_over(&self, last_seq: u64) -> Result<(), StoreError> {
        let mut generation = [0u8; 16];
        getrandom::fill(&mut generation)
            .map_err(|e| StoreError::io(std::io::Error::other(e.to_string())))?;
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
        let mut state = self.state()?;
        state
            .file
            .write_all_at(&[0; 4], 0)
            .map_err(StoreError::io)?;
        state.generation = generation;
        state.offset = 0;
        state.last_seq = last_seq;
        state.records = 0;
        state.failed = false;
        Ok(())
    }

    /// The sequence number the next record will carry, if a payload of `len` bytes fits in
    /// what is left of the file (`None`: checkpoint instead).
    pub(crate) fn next_seq(&self, len: usize) -> Result<Option<u64>, StoreError> {
        let state = self.state()?;
        if state.failed {
            return Err(failed());
        }
        let fits = state.offset + record_len(len) <= LOG_BYTES;
        Ok(fits.then_some(state.last_seq + 1))
    }

    /// The last sequence number written (what a checkpoint contains).
    pub(crate) fn last_seq(&self) -> Result<u64, StoreError> {
        let state = self.state()?;
        if state.failed {
            return Err(failed());
        }
        Ok(state.last_seq)
    }

    /// Whether records were written since the last start-over.
    pub(crate) fn has_records(&self) -> bool {
        self.state
            .lock()
            .is_ok_and(|state| state.records > 0 && !state.failed)
    }

    /// Writes record `seq` (from [`next_seq`](Self::next_seq)) and syncs it.
    pub(crate) fn append(&self, seq: u64, payload: &[u8]) -> Result<(), StoreError> {
        let mut state = self.state()?;
        if state.failed || seq != state.last_seq + 1 {
            return Err(failed());
        }
        let LogState {
            file,
            generation,
            offset,
            buffer,
            ..
        } = &mut *state;
        encode(buffer, generation, seq, payload);
        let written = file
            .write_all_at(buffer, *offset)
            .and_then(|()| file.sync_data());
        if let Err(e) = written {
            // After a failed sync the kernel may have dropped the dirty pages; a later sync
            // could report success for data that never reached the device.
            state.failed = true;
            return Err(StoreError::io(e));
        }
        state.offset += record_len(payload.len());
        self.bytes
            .fetch_add(record_len(payload.len()), Ordering::Relaxed);
        state.last_seq = seq;
        state.records += 1;
        Ok(())
    }

    /// (checkpoints, bytes appended) so far; the start-over of every open counts as one.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.checkpoints.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }

    /// Stops writing: a redb commit failed after its record was synced.
    pub(crate) fn fail(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.failed = true;
        }
    }
}

fn failed() -> StoreError {
    StoreError::Corrupt(
        "the commit log stopped after a failed write; restart the server to recover".into(),
    )
}

fn record_len(payload: usize) -> u64 {
    (HEADER + payload).div_ceil(PAGE as usize) as u64 * PAGE
}

fn encode(out: &mut Vec<u8>, generation: &[u8; 16], seq: u64, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(generation);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c(crc32c(0, &out[8..HEADER - 4]), payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(record_len(payload.len()) as usize, 0);
}

/// The records of a log (`read(offset, len)`: its bytes there, `None` past the end): from the
/// beginning, while whole, of one generation and numbered one after another.
fn scan(mut read: impl FnMut(usize, usize) -> Option<Vec<u8>>) -> Vec<Record> {
    let mut records: Vec<Record> = Vec::new();
    let mut generation = None;
    let mut offset = 0usize;
    while let Some(header) = read(offset, HEADER) {
        if header[..4] != MAGIC || header[4..8] != VERSION.to_le_bytes() {
            break;
        }
        let this: [u8; 16] = header[8..24].try_into().expect("16 bytes");
        let seq = u64::from_le_bytes(header[24..32].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(header[32..36].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(header[36..40].try_into().expect("4 bytes"));
        let Some(payload) = read(offset + HEADER, len) else {
            break;
        };
        if crc32c(crc32c(0, &header[8..HEADER - 4]), &payload) != crc
            || *generation.get_or_insert(this) != this
            || records.last().is_some_and(|last| last.seq + 1 != seq)
        {
            break;
        }
        records.push(Record { seq, payload });
        offset += record_len(len) as usize;
    }
    records
}

/// CRC-32C (Castagnoli), bitwise-reflected, table-driven.
fn crc32c(crc: u32, bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let mut crc = !crc;
    for &b in bytes {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// The puts and removes of one transaction, as bytes (see the module's documentation).
#[derive(Debug, Default)]
pub(crate) struct Recorder(RefCell<Vec<u8>>);

impl Recorder {
    pub(crate) fn put(&self, table: &str, key: &[u8], value: &[u8]) {
        let mut out = self.0.borrow_mut();
        push_head(&mut out, PUT, table, key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }

    pub(crate) fn remove(&self, table: &str, key: &[u8]) {
        push_head(&mut self.0.borrow_mut(), REMOVE, table, key);
    }

    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut())
    }
}

fn push_head(out: &mut Vec<u8>, op: u8, table: &str, key: &[u8]) {
    out.push(op);
    out.push(u8::try_from(table.len()).expect("table names are short"));
    out.extend_from_slice(table.as_bytes());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
}

/// One recorded change: the key, and the value (`None`: removed).
type Change = (Vec<u8>, Option<Vec<u8>>);

/// Decodes records' payloads into their changes by table, each table's in order.
fn changes_by_table(records: &[Record]) -> Result<HashMap<String, Vec<Change>>, StoreError> {
    let mut tables: HashMap<String, Vec<Change>> = HashMap::new();
    for record in records {
        let mut cursor = Cursor {
            rest: &record.payload,
            seq: record.seq,
        };
        while let Some(op) = cursor.op() {
            let name_len = usize::from(cursor.take(1)?[0]);
            let name = std::str::from_utf8(cursor.take(name_len)?)
                .map_err(|_| cursor.corrupt())?
                .to_string();
            let key = cursor.sized()?.to_vec();
            let value = match op {
                PUT => Some(cursor.sized()?.to_vec()),
                REMOVE => None,
                _ => return Err(cursor.corrupt()),
            };
            tables.entry(name).or_default().push((key, value));
        }
    }
    Ok(tables)
}

struct Cursor<'a> {
    rest: &'a [u8],
    seq: u64,
}

impl<'a> Cursor<'a> {
    fn corrupt(&self) -> StoreError {
        StoreError::Corrupt(format!("commit log record {} is malformed", self.seq))
    }

    fn op(&mut self) -> Option<u8> {
        let (&op, rest) = self.rest.split_first()?;
        self.rest = rest;
        Some(op)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        let (head, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or_else(|| self.corrupt())?;
        self.rest = rest;
        Ok(head)
    }

    /// A length (u32, little-endian) and that many bytes.
    fn sized(&mut self) -> Result<&'a [u8], StoreError> {
        let len = u32::from_le_bytes(self.take(4)?.try_into().expect("4 bytes"));
        self.take(len as usize)
    }
}

/// The tables of a store, visited when it opens ([`StoreOptions::prepare`]): each is created
/// when missing and, during recovery, given the commit log's changes to it.
///
/// [`StoreOptions::prepare`]: super::StoreOptions::prepare
pub struct TableSet<'t> {
    txn: &'t WriteTransaction,
    changes: HashMap<String, Vec<Change>>,
}

impl<'t> TableSet<'t> {
    /// Creates the visited tables in `txn`.
    pub fn new(txn: &'t WriteTransaction) -> Self {
        Self {
            txn,
            changes: HashMap::new(),
        }
    }

    /// Refuses changes to a table no visitor named.
    fn finish(self) -> Result<(), StoreError> {
        match self.changes.keys().next() {
            None => Ok(()),
            Some(name) => Err(StoreError::Corrupt(format!(
                "the commit log changes table {name:?}, which this build does not know"
            ))),
        }
    }
}

impl TableVisitor for TableSet<'_> {
    fn visit<K: StoreKey, V: Value + 'static>(
        &mut self,
        def: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        let mut table = self.txn.open_table(def)?;
        for (key, value) in self.changes.remove(def.name()).unwrap_or_default() {
            match value {
                Some(value) => drop(table.insert(K::from_bytes(&key), V::from_bytes(&value))?),
                None => drop(table.remove(K::from_bytes(&key))?),
            }
        }
        Ok(())
    }
}

/// The last record a redb state contains (0: none).
pub(crate) fn stored_seq(txn: &WriteTransaction) -> Result<u64, StoreError> {
    let meta = txn.open_table(super::database::META)?;
    let Some(value) = meta.get(META_LOG_SEQ)? else {
        return Ok(0);
    };
    // Read as 0, a damaged number would replay the whole log over newer state.
    let bytes: [u8; 8] = value
        .value()
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("meta {META_LOG_SEQ}")))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Names `seq` as the last record `txn`'s state contains (not itself recorded).
pub(crate) fn store_seq(txn: &WriteTransaction, seq: u64) -> Result<(), StoreError> {
    txn.open_table_unrecorded(super::database::META)?
        .put(META_LOG_SEQ, seq.to_le_bytes().as_slice())
}

/// Opens the log at `path` beside `db` and applies what the file lacks (see the module's
/// documentation): the runtime's tables and those of `preparers` are created, the changes of
/// the records after the file's last one are applied, in one durable transaction; the log
/// then starts over.
pub(crate) fn recover(
    db: &redb::Database,
    path: &Path,
    preparers: &[super::TablePreparer],
) -> Result<CommitLog, StoreError> {
    let (log, records) = CommitLog::open(path)?;
    let txn = WriteTransaction::redb(db.begin_write().map_err(StoreError::from_redb)?);
    let stored = stored_seq(&txn)?;
    let after: Vec<Record> = records.into_iter().filter(|r| r.seq > stored).collect();
    if let Some(first) = after.first()
        && first.seq != stored + 1
    {
        return Err(StoreError::Corrupt(format!(
            "the commit log {} starts at batch {} but the store file ends at batch {stored}: \
             was the store file restored without its log?",
            path.display(),
            first.seq
        )));
    }
    let mut set = TableSet {
        txn: &txn,
        changes: changes_by_table(&after)?,
    };
    super::Store::visit_tables(&mut set)?;
    for prepare in preparers {
        prepare(&mut set)?;
    }
    set.finish()?;
    let last = after.last().map_or(stored, |r| r.seq);
    store_seq(&txn, last)?;
    txn.commit()?;
    log.start_over(last)?;
    if !after.is_empty() {
        tracing::warn!(
            batches = after.len(),
            from = stored + 1,
            to = last,
            "applied batches from the commit log"
        );
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_published_check_value() {
        // RFC 3720, B.4: CRC-32C of the ASCII digits "123456789".
        assert_eq!(crc32c(0, b"123456789"), 0xE306_9283);
        // Computed in two pieces, as the header and the payload are.
        assert_eq!(crc32c(crc32c(0, b"1234"), b"56789"), 0xE306_9283);
    }

    fn log_bytes(records: &[(&[u8; 16], u64, &[u8])]) -> Vec<u8> {
        let mut bytes = vec![0u8; 64 * PAGE as usize];
        let mut offset = 0;
        let mut buffer = Vec::new();
        for (generation, seq, payload) in records {
            encode(&mut buffer, generation, *seq, payload);
            bytes[offset..offset + buffer.len()].copy_from_slice(&buffer);
            offset += buffer.len();
        }
        bytes
    }

    #[test]
    fn a_scan_reads_whole_numbered_records_of_one_generation() {
        let (a, b) = (&[1u8; 16], &[2u8; 16]);
        let big = vec![7u8; 5000];
        let bytes = log_bytes(&[(a, 8, b"x"), (a, 9, &big), (a, 10, b"")]);
        let scan_bytes =
            |bytes: &[u8]| scan(|at, len| bytes.get(at..at.checked_add(len)?).map(<[u8]>::to_vec));
        let seqs = |bytes: &[u8]| scan_bytes(bytes).iter().map(|r| r.seq).collect::<Vec<_>>();
        let read = scan_bytes(&bytes);
        assert_eq!(seqs(&bytes), vec![8, 9, 10]);
        assert_eq!(read[1].payload, big, "a record over two pages");
        // The start-over case: a newer generation at the front, the older one's rest behind.
        let mut over = bytes.clone();
        let front = log_bytes(&[(b, 11, b"y")]);
        over[..PAGE as usize].copy_from_slice(&front[..PAGE as usize]);
        assert_eq!(
            seqs(&over),
            vec![11],
            "the old generation behind is not read"
        );
        // Numbering must follow on: a gap ends the log.
        assert_eq!(seqs(&log_bytes(&[(a, 1, b"x"), (a, 3, b"z")])), vec![1]);
        // A torn record (any byte of header or payload) ends the log there.
        for at in [0, 9, 30, 36, PAGE as usize + 40, 5000] {
            let mut torn = bytes.clone();
            torn[PAGE as usize + at] ^= 0x40;
            assert_eq!(seqs(&torn), vec![8], "byte {at} of record 9 changed");
        }
        // A length past the end of the file ends it too.
        let mut long = bytes.clone();
        long[32..36].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(seqs(&long), Vec::<u64>::new());
        assert!(scan_bytes(&[0u8; 8192]).is_empty(), "a fresh log");
    }

    #[test]
    fn appended_records_read_back_until_a_start_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let (log, records) = CommitLog::open(&path).expect("creates");
        assert!(records.is_empty());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).expect("metadata").permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            log.next_seq(1).is_err(),
            "nothing is written before the first start-over"
        );
        log.start_over(41).expect("starts");
        for payload in [&b"a"[..], &[9u8; 6000], b"c"] {
            let seq = log.next_seq(payload.len()).expect("open").expect("fits");
            log.append(seq, payload).expect("appends");
        }
        assert!(log.append(7, b"out of turn").is_err());
        assert_eq!(log.counts(), (1, 4 * PAGE));
        drop(log);
        let (log, records) = CommitLog::open(&path).expect("reopens");
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![42, 43, 44]);
        assert_eq!(records[1].payload, vec![9u8; 6000]);
        // After a start-over (a checkpoint contains them) a reopen reads nothing.
        log.start_over(44).expect("starts over");
        drop(log);
        let (_, records) = CommitLog::open(&path).expect("reopens");
        assert!(records.is_empty());
        // A payload larger than what is left is not given a number: the caller checkpoints.
        let (log, _) = CommitLog::open(&path).expect("reopens");
        log.start_over(44).expect("starts over");
        assert_eq!(log.next_seq(LOG_BYTES as usize).expect("open"), None);
    }

    #[test]
    fn a_larger_log_from_an_earlier_build_is_read_to_its_end() {
        // The log was 16 MiB before it was 4: records an earlier build wrote past the new size
        // were answered and must come back.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        let generation = [3u8; 16];
        let payload = vec![5u8; 1 << 20];
        let mut file = vec![0u8; 16 << 20];
        let (mut offset, mut buffer) = (0, Vec::new());
        for seq in 1..=6 {
            encode(&mut buffer, &generation, seq, &payload);
            file[offset..offset + buffer.len()].copy_from_slice(&buffer);
            offset += buffer.len();
        }
        assert!(
            offset as u64 > LOG_BYTES,
            "the records reach past the new size"
        );
        std::fs::write(&path, &file).expect("write");
        let (log, records) = CommitLog::open(&path).expect("opens");
        let seqs: Vec<u64> = records.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
        assert!(records.iter().all(|r| r.payload == payload));
        // New records stay within the new size.
        log.start_over(6).expect("starts over");
        assert_eq!(log.next_seq(LOG_BYTES as usize).expect("open"), None);
    }

    #[test]
    fn recorded_changes_decode_by_table_in_order() {
        let recorder = Recorder::default();
        recorder.put("actors", b"k1", b"v1");
        recorder.remove("meta", b"schema");
        recorder.put("actors", b"k1", b"");
        let first = Record {
            seq: 1,
            payload: recorder.take(),
        };
        recorder.remove("actors", b"k1");
        let second = Record {
            seq: 2,
            payload: recorder.take(),
        };
        let tables = changes_by_table(&[first.clone(), second]).expect("decodes");
        assert_eq!(
            tables["actors"],
            vec![
                (b"k1".to_vec(), Some(b"v1".to_vec())),
                (b"k1".to_vec(), Some(Vec::new())),
                (b"k1".to_vec(), None),
            ]
        );
        assert_eq!(tables["meta"], vec![(b"schema".to_vec(), None)]);
        // A payload cut short is refused, not half applied.
        let cut = Record {
            seq: 1,
            payload: first.payload[..first.payload.len() - 1].to_vec(),
        };
        assert!(matches!(
            changes_by_table(&[cut]),
            Err(StoreError::Corrupt(_))
        ));
    }
}
