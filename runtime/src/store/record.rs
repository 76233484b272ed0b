//! Versioned actor records and their pinned binary encoding.
//!
//! Layout of version 2 (all integers big-endian; version 1 is the same without the scopes and is
//! still read, with no scopes):
//!
//! ```text
//! u8  version = 2
//! u8  kind        0 = master, 1 = agent
//! u8  status      0 = active, 1 = revoked (then u64 revoked_at follows)
//! u64 created_at  milliseconds since the Unix epoch
//! u8  has_parent  0 | 1 (then 32 bytes parent omni follow)
//! u16 label length, label bytes (UTF-8)
//! u16 path length,  path bytes (UTF-8)
//! u16 scope count, then per scope: u16 length, bytes (UTF-8)      (version 2)
//! ```
//!
//! The omni is the table key and is not repeated in the value.

use super::encoding::{Reader, put_bytes};
use crate::clock::Timestamp;
use crate::omni::Omni;

/// Current record version written by this build.
pub const RECORD_VERSION: u8 = 2;

/// What kind of actor a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActorKind {
    /// The root of a tree: a human's account.
    Master,
    /// A child actor under a master or another agent.
    Agent,
}

/// The stored status of one record. A descendant of a revoked actor keeps `Active` here;
/// its effective status is computed on read from its lineage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredStatus {
    /// Not revoked itself.
    Active,
    /// Revoked itself at this time (the durable revocation marker).
    Revoked {
        /// When the revocation committed.
        at: Timestamp,
    },
}

/// One actor as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorRecord {
    /// The actor's id (the table key).
    pub omni: Omni,
    /// The parent's omni; `None` for a master.
    pub parent: Option<Omni>,
    /// The label under the parent (empty for a master).
    pub label: String,
    /// `//a//b` for agents, empty for a master.
    pub path: String,
    /// Master or agent.
    pub kind: ActorKind,
    /// The record's own status.
    pub status: StoredStatus,
    /// When the actor was created.
    pub created_at: Timestamp,
    /// The scopes stored on this actor (a master's are implicit: all).
    pub scopes: Vec<String>,
}

/// A stored value that this build cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The record was written by a newer (or unknown) format.
    #[error("record version {0} is not supported by this build")]
    Version(u8),
    /// The bytes end early or carry an invalid field.
    #[error("record is malformed at byte {0}")]
    Malformed(usize),
}

impl ActorRecord {
    /// Encodes the record (without its omni) in the pinned version-1 layout.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + self.label.len() + self.path.len());
        out.push(RECORD_VERSION);
        out.push(match self.kind {
            ActorKind::Master => 0,
            ActorKind::Agent => 1,
        });
        match self.status {
            StoredStatus::Active => out.push(0),
            StoredStatus::Revoked { at } => {
                out.push(1);
                out.extend_from_slice(&at.as_millis().to_be_bytes());
            }
        }
        out.extend_from_slice(&self.created_at.as_millis().to_be_bytes());
        match &self.parent {
            None => out.push(0),
            Some(p) => {
                out.push(1);
                out.extend_from_slice(p.as_bytes());
            }
        }
        put_bytes(&mut out, self.label.as_bytes());
        put_bytes(&mut out, self.path.as_bytes());
        let count = u16::try_from(self.scopes.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        for scope in self.scopes.iter().take(usize::from(count)) {
            put_bytes(&mut out, scope.as_bytes());
        }
        out
    }

    /// Decodes a value stored under `omni`.
    pub fn decode(omni: Omni, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u8()?;
        if version != 1 && version != RECORD_VERSION {
            return Err(DecodeError::Version(version));
        }
        let kind = match r.u8()? {
            0 => ActorKind::Master,
            1 => ActorKind::Agent,
            _ => return Err(DecodeError::Malformed(r.position() - 1)),
        };
        let status = match r.u8()? {
            0 => StoredStatus::Active,
            1 => StoredStatus::Revoked {
                at: Timestamp::from_millis(r.u64()?),
            },
            _ => return Err(DecodeError::Malformed(r.position() - 1)),
        };
        let created_at = Timestamp::from_millis(r.u64()?);
        let parent = match r.u8()? {
            0 => None,
            1 => Some(Omni::from_bytes(r.array()?)),
            _ => return Err(DecodeError::Malformed(r.position() - 1)),
        };
        let label = r.string()?;
        let path = r.string()?;
        let mut scopes = Vec::new();
        if version >= 2 {
            for _ in 0..r.u16()? {
                scopes.push(r.string()?);
            }
            // Held for the actor's lifetime: no room for scopes it will never get.
            scopes.shrink_to_fit();
        }
        r.finish()?;
        Ok(Self {
            omni,
            parent,
            label,
            path,
            kind,
            status,
            created_at,
            scopes,
        })
    }

    /// When this record itself was revoked, if it was.
    pub fn revoked_at(&self) -> Option<Timestamp> {
        match self.status {
            StoredStatus::Active => None,
            StoredStatus::Revoked { at } => Some(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ActorRecord {
        ActorRecord {
            omni: Omni::from_bytes([7; 32]),
            parent: Some(Omni::from_bytes([1; 32])),
            label: "bot-1".into(),
            path: "//ops//bot-1".into(),
            kind: ActorKind::Agent,
            status: StoredStatus::Revoked {
                at: Timestamp::from_millis(1_700_000_000_123),
            },
            created_at: Timestamp::from_millis(1_700_000_000_000),
            scopes: vec!["sign:eip191".into(), "sign:tx:1".into()],
        }
    }

    #[test]
    fn round_trips() {
        let rec = sample();
        assert_eq!(
            ActorRecord::decode(rec.omni, &rec.encode()),
            Ok(rec.clone())
        );
        let master = ActorRecord {
            parent: None,
            label: String::new(),
            path: String::new(),
            kind: ActorKind::Master,
            status: StoredStatus::Active,
            ..rec
        };
        assert_eq!(
            ActorRecord::decode(master.omni, &master.encode()),
            Ok(master)
        );
    }

    #[test]
    fn encoding_is_pinned() {
        let bytes = sample().encode();
        assert_eq!(&bytes[..3], &[2, 1, 1]);
        assert_eq!(&bytes[3..11], &1_700_000_000_123u64.to_be_bytes());
        let v1_len = 3 + 8 + 8 + 1 + 32 + 2 + 5 + 2 + 12;
        assert_eq!(bytes.len(), v1_len + 2 + (2 + 11) + (2 + 9));
        assert_eq!(&bytes[v1_len..v1_len + 2], &[0, 2]);
        // A version-1 record (no scopes) still reads, with no scopes.
        let mut v1 = bytes[..v1_len].to_vec();
        v1[0] = 1;
        let old = ActorRecord::decode(sample().omni, &v1).expect("v1 reads");
        assert!(old.scopes.is_empty());
        assert_eq!(old.path, "//ops//bot-1");
    }

    #[test]
    fn rejects_unknown_version_and_truncation() {
        let mut bytes = sample().encode();
        let omni = sample().omni;
        bytes[0] = 9;
        assert_eq!(
            ActorRecord::decode(omni, &bytes),
            Err(DecodeError::Version(9))
        );
        let good = sample().encode();
        for cut in 0..good.len() {
            assert!(
                ActorRecord::decode(omni, &good[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(ActorRecord::decode(omni, &trailing).is_err());
    }
}
