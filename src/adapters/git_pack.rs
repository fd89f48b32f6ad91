//! Many new blobs written as one pack file instead of a loose object each.
//!
//! A loose object costs a zlib stream set up and a file created: a first issuance of 10,000
//! certificates wrote 20,000 of them. A pack holds them in one file, beside its `.idx`. Neither
//! of libgit2's pack writers fits: its pack builder always searches for deltas (which costs more
//! than it saves on certificates, mostly random bytes), and its indexer inflates and hashes
//! every object again on one core, with a memory map per object (half a second for 20,000). So
//! both files are written here, in git's documented formats (gitformat-pack(5)), with the ids
//! computed once. A blob the caller says begins with another blob of the pack (a chain file
//! begins with its leaf) is stored as a delta on it, found without a search; every other blob
//! whole. The tests have git itself check them (`fsck`, `verify-pack`) and read every object
//! back.

use git2::Oid;
use rayon::prelude::*;
use sha1::{Digest, Sha1};
use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

/// Fewer new objects than this stay loose, as git keeps a fetch or push of fewer than
/// `transfer.unpackLimit` (100) objects: many tiny packs would slow every lookup.
pub const PACK_FROM: usize = 100;

/// The pack object type of a blob.
const OBJ_BLOB: u8 = 3;

/// The pack object type of a delta on an object earlier in the same pack.
const OBJ_OFS_DELTA: u8 = 6;

/// The largest stored deflate block: its length is 16 bits.
const STORED_BLOCK: usize = 0xffff;

/// [`blob_ids`], then [`write_pack`]: the ids, and the pack written.
#[cfg(test)]
pub fn write_blobs<T: Sync>(
    objects: &Path,
    blobs: &[T],
    bytes: impl Fn(&T) -> Cow<'_, [u8]> + Sync,
    prefix: impl Fn(usize) -> Option<usize> + Sync,
) -> Result<Vec<Oid>, String> {
    let ids = blob_ids(blobs, &bytes)?;
    write_pack(objects, blobs, &ids, bytes, prefix)?;
    Ok(ids)
}

/// The ids of `blobs`, computed on all cores: known before their pack is written, so a tree
/// can name them while it is (see [`write_pack`]).
pub fn blob_ids<T: Sync>(
    blobs: &[T],
    bytes: impl Fn(&T) -> Cow<'_, [u8]> + Sync,
) -> Result<Vec<Oid>, String> {
    blobs.par_iter().map(|b| blob_id(&bytes(b))).collect()
}

/// Writes `blobs` as one pack (each distinct blob once) into `objects` (the repository's
/// object folder), given their `ids` as [`blob_ids`] computed them. `bytes` gives a blob's
/// content: it is called once per blob, and once more for a delta's base per delta on it, so
/// content assembled from parts is never held all at once. `prefix` may name another blob that
/// this one begins with, which makes it a delta on that one; the claim is checked, and a blob
/// it does not hold for is stored whole. The `.idx` is renamed into place last: until then no
/// reader sees the pack, and a failure leaves only a temporary file, removed on drop.
pub fn write_pack<T: Sync>(
    objects: &Path,
    blobs: &[T],
    ids: &[Oid],
    bytes: impl Fn(&T) -> Cow<'_, [u8]> + Sync,
    prefix: impl Fn(usize) -> Option<usize> + Sync,
) -> Result<(), String> {
    assert_eq!(ids.len(), blobs.len(), "an id per blob");
    // Each object once (two outputs can hold the same bytes).
    let mut first = std::collections::HashMap::with_capacity(ids.len());
    let unique: Vec<usize> = (0..blobs.len())
        .filter(|&i| *first.entry(ids[i]).or_insert(i) == i)
        .collect();
    let count = u32::try_from(unique.len()).map_err(|_| "too many objects for one pack")?;
    // A delta's base is stored whole and written before it (its offset is the delta's
    // reference), so no delta is more than one step from its content.
    let base_of = |i: usize| {
        prefix(i)
            .map(|b| first[&ids[b]])
            .filter(|&b| ids[b] != ids[i] && prefix(b).is_none())
    };
    // Each base, then the deltas on it: libgit2 reads a delta's base to learn its type, and
    // with the deltas after every base it mapped a pack window per object (100,000 chain
    // files: 190,000 maps of 4 MiB, 2.6 s to build the trees); this way it reads in order.
    let mut order: Vec<(usize, bool, usize)> = unique
        .iter()
        .map(|&i| match base_of(i) {
            Some(b) => (b, true, i),
            None => (i, false, i),
        })
        .collect();
    order.sort_unstable();
    let order: Vec<usize> = order.into_iter().map(|(_, _, i)| i).collect();

    let dir = objects.join("pack");
    let fail = |e: std::io::Error| format!("{}: cannot write a pack: {e}", dir.display());
    std::fs::create_dir_all(&dir).map_err(fail)?;
    let temp = |suffix: &str| {
        tempfile::Builder::new()
            .prefix("tmp_gitca_")
            .suffix(suffix)
            .tempfile_in(&dir)
            .map_err(fail)
    };
    let mut pack = Hashed::new(std::io::BufWriter::with_capacity(1 << 20, temp(".pack")?));
    let mut header = b"PACK".to_vec();
    header.extend_from_slice(&2u32.to_be_bytes());
    header.extend_from_slice(&count.to_be_bytes());
    pack.put(&header).map_err(fail)?;
    let mut entries = Vec::with_capacity(unique.len());
    let mut offsets = std::collections::HashMap::with_capacity(order.len());
    // Each entry encoded and written in turn, on this thread, while the work-tree files are
    // written on every core. When the entries were encoded on those cores instead, they waited
    // behind the files and then ran alone (20-25 ms of a 10,000 issuance with one core idle).
    // One entry is held at a time.
    for &i in &order {
        let data = bytes(&blobs[i]);
        let delta = base_of(i).and_then(|b| {
            let base = bytes(&blobs[b]);
            Some((b, prefix_delta(&base, &data)?))
        });
        let e = match delta {
            Some((b, delta)) => entry(OBJ_OFS_DELTA, &delta, Some(b)),
            None => entry(OBJ_BLOB, &data, None),
        };
        let offset = pack.len;
        let mut crc = crc32fast::Hasher::new();
        let mut put = |bytes: &[u8]| {
            crc.update(bytes);
            pack.put(bytes).map_err(fail)
        };
        put(&e.head)?;
        if let Some(b) = e.base {
            put(&base_distance(offset - offsets[&b]))?;
        }
        put(&e.body)?;
        offsets.insert(i, offset);
        entries.push(IndexEntry {
            id: ids[i],
            crc: crc.finalize(),
            offset,
        });
    }
    let (pack_out, pack_sum) = pack.finish();
    let mut pack_file = pack_out.into_inner().map_err(|e| fail(e.into_error()))?;
    pack_file.write_all(&pack_sum).map_err(fail)?;

    let mut idx_file = temp(".idx")?;
    idx_file
        .write_all(&index_v2(entries, &pack_sum))
        .map_err(fail)?;
    // Read-only and synced to disk before they are named, as git leaves its packs: a crash
    // must not leave an index naming objects a torn pack does not hold.
    let name = dir.join(format!(
        "pack-{}",
        base16ct::lower::encode_string(&pack_sum)
    ));
    for (file, ext) in [(pack_file, "pack"), (idx_file, "idx")] {
        use std::os::unix::fs::PermissionsExt;
        let to = name.with_extension(ext);
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o444))
            .and_then(|()| file.as_file().sync_all())
            .map_err(fail)?;
        file.persist(&to)
            .map_err(|e| format!("{}: cannot name the pack: {}", to.display(), e.error))?;
    }
    Ok(())
}

/// A blob's object id, SHA-1 over its header and content (gitformat-object(5)), with the CPU's
/// SHA instructions: libgit2's collision-detecting SHA-1 took 50 ms of a 10,000 issuance (perf),
/// and the blobs were written in 272-274 ms against 238-244 ms now. The content is gitca's own
/// output, each certificate with a serial from the CSPRNG early on, which no one can choose a
/// colliding prefix for; in the tests, git's `fsck` checks the ids with collision detection.
fn blob_id(content: &[u8]) -> Result<Oid, String> {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()));
    h.update(content);
    Oid::from_bytes(&h.finalize()).map_err(|e| e.message().to_string())
}

/// A file being written, with the SHA-1 and length of what was written so far: the checksum
/// git ends a pack or an index with. With the CPU's SHA instructions, as [`blob_id`] says:
/// gix-index's own, with collision detection, took 4-5 ms of a 10,000 issuance's index, the
/// last step of its outputs commit, with the other core idle.
pub(super) struct Hashed<W> {
    out: W,
    sum: Sha1,
    len: u64,
}

impl<W: Write> Hashed<W> {
    pub(super) fn new(out: W) -> Hashed<W> {
        Hashed {
            out,
            sum: Sha1::new(),
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sum.update(bytes);
        self.len += bytes.len() as u64;
        self.out.write_all(bytes)
    }

    /// What was written to, and the SHA-1 of all that was.
    pub(super) fn finish(self) -> (W, [u8; 20]) {
        (self.out, self.sum.finalize().into())
    }
}

impl<W: Write> Write for Hashed<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.put(bytes).map(|()| bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// A pack entry but for the distance to its base, which depends on where it lands.
struct Entry {
    /// The type and the size of the content (a delta's own size for a delta).
    head: Vec<u8>,
    /// The blob, for a delta, this entry refers to.
    base: Option<usize>,
    /// The zlib stream of the content.
    body: Vec<u8>,
}

/// One pack entry: the type and size header, and `data` as a zlib stream.
fn entry(kind: u8, data: &[u8], base: Option<usize>) -> Entry {
    // The size's low four bits share the first byte with the type; seven bits per byte follow,
    // the high bit saying another byte comes.
    let mut head = Vec::with_capacity(10);
    let mut size = data.len();
    let mut byte = (kind << 4) | (size & 0x0f) as u8;
    size >>= 4;
    while size > 0 {
        head.push(byte | 0x80);
        byte = (size & 0x7f) as u8;
        size >>= 7;
    }
    head.push(byte);
    Entry {
        head,
        base,
        body: stored_zlib(data),
    }
}

/// `data` as a zlib stream (RFC 1950) of stored deflate blocks (RFC 1951, 3.2.4): the
/// two-byte header, each block's final bit and type, its length and the length's complement,
/// its bytes, then the Adler-32 of `data`.
///
/// Entries are stored, not compressed: PEM is base64, which the fastest zlib level shrank by a
/// sixth only, for a fifth of the issuance's pack time, and the chain files, two thirds of the
/// bytes, are deltas. `git gc` compresses them later as it repacks; a push sends them as they
/// are. The wrapper is written here because zlib-rs clears its 128 KiB hash table at every
/// stream, even one it only stores (2% of an issuance's samples in `perf`).
fn stored_zlib(data: &[u8]) -> Vec<u8> {
    let blocks = data.len().div_ceil(STORED_BLOCK).max(1);
    let mut out = Vec::with_capacity(2 + blocks * 5 + data.len() + 4);
    // Deflate with a 32 KiB window, no dictionary, "fastest"; a multiple of 31, as required.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut chunks = data.chunks(STORED_BLOCK).peekable();
    if data.is_empty() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(chunk) = chunks.next() {
        out.push(u8::from(chunks.peek().is_none()));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out.extend_from_slice(&simd_adler32::adler32(&data).to_be_bytes());
    out
}

/// A delta making `data` from `base` when `data` begins with it (gitformat-pack(5),
/// "Deltified representation"): both sizes, copies of the base, then the rest inserted. None
/// when it does not, or when the base is empty or too large for a copy's 32-bit offset.
fn prefix_delta(base: &[u8], data: &[u8]) -> Option<Vec<u8>> {
    if base.is_empty() || base.len() > u32::MAX as usize || !data.starts_with(base) {
        return None;
    }
    let rest = &data[base.len()..];
    let mut d = Vec::with_capacity(rest.len() + rest.len() / 127 + 32);
    for mut size in [base.len(), data.len()] {
        // Seven bits per byte, least significant first, the high bit saying another comes.
        while size >= 0x80 {
            d.push((size & 0x7f) as u8 | 0x80);
            size >>= 7;
        }
        d.push(size as u8);
    }
    // A copy names its offset (four bytes) and size (three) by the bytes that are not zero.
    const MAX_COPY: usize = 0xff_ffff;
    let mut at = 0;
    while at < base.len() {
        let size = (base.len() - at).min(MAX_COPY);
        let mut op = 0x80u8;
        let mut args = Vec::with_capacity(7);
        for (bit, byte) in at.to_le_bytes()[..4].iter().enumerate() {
            if *byte != 0 {
                op |= 1 << bit;
                args.push(*byte);
            }
        }
        for (bit, byte) in size.to_le_bytes()[..3].iter().enumerate() {
            if *byte != 0 {
                op |= 0x10 << bit;
                args.push(*byte);
            }
        }
        d.push(op);
        d.extend_from_slice(&args);
        at += size;
    }
    for chunk in rest.chunks(0x7f) {
        d.push(chunk.len() as u8);
        d.extend_from_slice(chunk);
    }
    Some(d)
}

/// How far back a delta's base starts, as an `OBJ_OFS_DELTA` entry writes it: seven bits per
/// byte, most significant first, each continued byte's value less one (so no distance has two
/// spellings).
fn base_distance(mut distance: u64) -> Vec<u8> {
    let mut out = vec![(distance & 0x7f) as u8];
    distance >>= 7;
    while distance > 0 {
        distance -= 1;
        out.push(0x80 | (distance & 0x7f) as u8);
        distance >>= 7;
    }
    out.reverse();
    out
}

/// Where an object is in the pack.
#[derive(Debug, Clone, Copy)]
struct IndexEntry {
    id: Oid,
    crc: u32,
    offset: u64,
}

/// The version 2 `.idx` of a pack: the fan-out table, the ids in order, their CRC-32s, their
/// offsets (those past 2 GiB in a table of 64-bit offsets), the pack's checksum and its own.
fn index_v2(mut entries: Vec<IndexEntry>, pack_sum: &[u8; 20]) -> Vec<u8> {
    entries.sort_unstable_by_key(|e| e.id);
    let mut out = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    out.extend_from_slice(b"\xfftOc");
    out.extend_from_slice(&2u32.to_be_bytes());
    let mut fanout = [0u32; 256];
    for e in &entries {
        fanout[e.id.as_bytes()[0] as usize] += 1;
    }
    let mut below = 0;
    for n in fanout {
        below += n;
        out.extend_from_slice(&below.to_be_bytes());
    }
    for e in &entries {
        out.extend_from_slice(e.id.as_bytes());
    }
    for e in &entries {
        out.extend_from_slice(&e.crc.to_be_bytes());
    }
    let mut large = Vec::new();
    for e in &entries {
        let small = match u32::try_from(e.offset) {
            Ok(o) if o < 0x8000_0000 => o,
            _ => {
                large.push(e.offset);
                0x8000_0000 | (large.len() - 1) as u32
            }
        };
        out.extend_from_slice(&small.to_be_bytes());
    }
    for o in large {
        out.extend_from_slice(&o.to_be_bytes());
    }
    out.extend_from_slice(pack_sum);
    let own: [u8; 20] = Sha1::digest(&out).into();
    out.extend_from_slice(&own);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::git::tests::git;
    use git2::ObjectType;

    /// The ids computed here are libgit2's, at every length of the size in the header.
    #[test]
    fn blob_ids_are_the_ids_git_computes() {
        for len in [0, 1, 9, 10, 99, 100, 4095, 70_000] {
            let content: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            assert_eq!(
                blob_id(&content).unwrap(),
                Oid::hash_object(ObjectType::Blob, &content).unwrap(),
                "length {len}"
            );
        }
    }

    /// Offsets past 2 GiB go to the table of 64-bit offsets, named by their position in it
    /// with the high bit set; the others stay in the 32-bit table.
    #[test]
    fn offsets_past_two_gib_are_in_the_large_offset_table() {
        let id = |b: u8| Oid::from_bytes(&[b; 20]).unwrap();
        let entries = vec![
            IndexEntry {
                id: id(3),
                crc: 30,
                offset: 5 << 30,
            },
            IndexEntry {
                id: id(1),
                crc: 10,
                offset: 12,
            },
            IndexEntry {
                id: id(2),
                crc: 20,
                offset: 0x8000_0000,
            },
        ];
        let idx = index_v2(entries, &[7; 20]);
        let n = 3;
        let word = |at: usize| u32::from_be_bytes(idx[at..at + 4].try_into().unwrap());
        assert_eq!(&idx[..8], b"\xfftOc\0\0\0\x02");
        let fan = |first: usize| word(8 + 4 * first);
        assert_eq!((fan(0), fan(1), fan(3), fan(255)), (0, 1, 3, 3));
        let ids = 8 + 1024;
        assert_eq!(&idx[ids..ids + 20], id(1).as_bytes(), "sorted by id");
        let crcs = ids + 20 * n;
        assert_eq!((word(crcs), word(crcs + 4), word(crcs + 8)), (10, 20, 30));
        let offsets = crcs + 4 * n;
        assert_eq!(word(offsets), 12);
        assert_eq!(word(offsets + 4), 0x8000_0000, "first large offset");
        assert_eq!(word(offsets + 8), 0x8000_0001, "second large offset");
        let large = offsets + 4 * n;
        let big = |at: usize| u64::from_be_bytes(idx[at..at + 8].try_into().unwrap());
        assert_eq!((big(large), big(large + 8)), (0x8000_0000, 5 << 30));
        assert_eq!(
            &idx[large + 16..large + 36],
            &[7; 20],
            "the pack's checksum"
        );
        let own: [u8; 20] = Sha1::digest(&idx[..large + 36]).into();
        assert_eq!(&idx[large + 36..], &own, "the index's own checksum");
    }

    /// git itself checks the pack and its index and reads every object back: sizes of every
    /// length of the header (one to three size bytes), of none to four stored blocks, a
    /// repeated blob stored once.
    #[test]
    fn a_pack_of_blobs_is_one_git_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "--bare"]);

        let mut blobs: Vec<Vec<u8>> = (0..300u32)
            .map(|i| {
                let len = [0, 1, 15, 16, 127, 2048, 65_535, 65_536, 200_000][i as usize % 9];
                noise(i, len)
            })
            .collect();
        blobs.push(blobs[5].clone());
        let ids = packed(dir.path(), &blobs, &[]);

        let listed = checked_pack(dir.path());
        let distinct: std::collections::HashSet<&Oid> = ids.iter().collect();
        assert_eq!(
            listed.lines().filter(|l| l.contains(" blob ")).count(),
            distinct.len(),
            "each distinct blob once"
        );
        assert!(!listed.contains("chain length"), "no deltas:\n{listed}");
        assert_read_back(dir.path(), &blobs, &ids);
    }

    /// A blob that begins with another of the pack, as a chain file begins with its leaf, is a
    /// delta on it, one step deep; a claim that does not hold, or whose base is a delta itself,
    /// leaves the blob whole. Bases of 1 byte to past 16 MiB (two copies), inserts from none
    /// to many 127-byte pieces, distances of one to four bytes.
    #[test]
    fn blobs_that_begin_with_another_are_deltas_git_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "--bare"]);

        let ca = noise(u32::MAX, 600);
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut claims: Vec<Option<usize>> = Vec::new();
        for (i, len) in [1, 127, 128, 680, 70_000, 16_777_300]
            .into_iter()
            .enumerate()
        {
            let leaf = noise(i as u32, len);
            let chain = [leaf.as_slice(), &ca].concat();
            claims.push(None);
            claims.push(Some(blobs.len()));
            blobs.push(leaf);
            blobs.push(chain);
        }
        let deltas = blobs.len() / 2;
        // A claim about a blob it does not begin with: stored whole.
        claims.push(Some(6));
        blobs.push(noise(99, 700));
        // The base of a claim is a delta itself: stored whole, so no chain is two deep.
        claims.push(Some(3));
        blobs.push([blobs[3].as_slice(), b"more"].concat());
        // A blob claimed to begin with its own copy is stored once, whole.
        claims.push(Some(2));
        blobs.push(blobs[2].clone());
        let ids = packed(dir.path(), &blobs, &claims);

        let listed = checked_pack(dir.path());
        assert!(
            listed.contains(&format!("chain length = 1: {deltas} objects")),
            "{listed}"
        );
        assert!(!listed.contains("chain length = 2"), "{listed}");
        let size = |id: &Oid| {
            let line = listed
                .lines()
                .find(|l| l.starts_with(&id.to_string()))
                .unwrap();
            line.split_whitespace()
                .nth(3)
                .unwrap()
                .parse::<usize>()
                .unwrap()
        };
        assert!(size(&ids[11]) < ca.len() + 64, "a delta copies its base");
        assert!(size(&ids[12]) > 700, "stored whole");
        assert_read_back(dir.path(), &blobs, &ids);
    }

    /// Outputs come in path order, each chain file before the leaf it begins with; in the pack,
    /// each delta comes right after its base, so a reader resolving one (libgit2 reads the
    /// base for the type) stays in one stretch of the file.
    #[test]
    fn each_delta_follows_its_base_in_the_pack() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q", "--bare"]);
        let ca = noise(u32::MAX, 600);
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let mut claims: Vec<Option<usize>> = Vec::new();
        for i in 0..4 {
            let leaf = noise(i, 700);
            claims.push(Some(blobs.len() + 1));
            blobs.push([leaf.as_slice(), &ca].concat());
            claims.push(None);
            blobs.push(leaf);
        }
        let ids = packed(dir.path(), &blobs, &claims);
        // `verify-pack -v`: id, type, size, size in pack, offset[, depth, base id].
        let listed = checked_pack(dir.path());
        let mut objects: Vec<(u64, String, Option<String>)> = listed
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                Oid::from_str(f.first()?).ok()?;
                let offset = f.get(4)?.parse().ok()?;
                Some((offset, f[0].to_string(), f.get(6).map(|b| b.to_string())))
            })
            .collect();
        objects.sort();
        assert_eq!(objects.len(), blobs.len(), "{listed}");
        for pair in objects.windows(2) {
            if let Some(base) = &pair[1].2 {
                assert_eq!(&pair[0].1, base, "{listed}");
            }
        }
        let deltas = objects.iter().filter(|o| o.2.is_some()).count();
        assert_eq!(deltas, 4, "{listed}");
        assert_read_back(dir.path(), &blobs, &ids);
    }

    #[test]
    fn distances_to_a_base_are_written_as_git_reads_them() {
        // gitformat-pack(5): each continued byte's value is one less than its bits say.
        assert_eq!(base_distance(1), [0x01]);
        assert_eq!(base_distance(127), [0x7f]);
        assert_eq!(base_distance(128), [0x80, 0x00]);
        assert_eq!(base_distance(16_511), [0xff, 0x7f]);
        assert_eq!(base_distance(16_512), [0x80, 0x80, 0x00]);
    }

    /// Bytes that do not compress, different for each seed.
    fn noise(seed: u32, len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|j| (j ^ (seed << 20)).wrapping_mul(2_654_435_761).to_be_bytes()[0])
            .collect()
    }

    /// `blobs` written as one pack into the bare repository `dir`, with the prefix `claims`
    /// (none if empty); their ids.
    fn packed(dir: &Path, blobs: &[Vec<u8>], claims: &[Option<usize>]) -> Vec<Oid> {
        let claim = |i: usize| claims.get(i).copied().flatten();
        write_blobs(
            &dir.join("objects"),
            blobs,
            |b| Cow::from(b.as_slice()),
            claim,
        )
        .unwrap()
    }

    /// The repository at `dir` holds one pack and no loose object, and git finds nothing wrong
    /// with it: returns `git verify-pack -v`.
    fn checked_pack(dir: &Path) -> String {
        let packs: Vec<String> = std::fs::read_dir(dir.join("objects/pack"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".pack"))
            .collect();
        assert_eq!(packs.len(), 1, "{packs:?}");
        let loose = std::fs::read_dir(dir.join("objects"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().len() == 2)
            .count();
        assert_eq!(loose, 0, "no loose objects");
        git(dir, &["fsck", "--strict", "--no-dangling"]);
        git(
            dir,
            &["verify-pack", "-v", &format!("objects/pack/{}", packs[0])],
        )
    }

    /// Every blob, read back through one `git cat-file --batch`.
    fn assert_read_back(dir: &Path, blobs: &[Vec<u8>], ids: &[Oid]) {
        let mut child = std::process::Command::new("git")
            .args(["cat-file", "--batch"])
            .current_dir(dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let asked: String = ids.iter().map(|id| format!("{id}\n")).collect();
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || stdin.write_all(asked.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let mut rest = out.stdout.as_slice();
        for (blob, id) in blobs.iter().zip(ids) {
            let eol = rest.iter().position(|&b| b == b'\n').unwrap();
            let head = String::from_utf8_lossy(&rest[..eol]).into_owned();
            assert_eq!(head, format!("{id} blob {}", blob.len()));
            let body = &rest[eol + 1..eol + 1 + blob.len()];
            assert!(body == blob.as_slice(), "blob {id}");
            rest = &rest[eol + 2 + blob.len()..];
        }
        assert!(rest.is_empty());
    }
}
