use super::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn crc32c_is_castagnoli() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
}

#[test]
fn frames_match_the_spec_vectors() {
    // The crc record that opens file 0.
    assert_eq!(frame(CRC, 0, None), hex("04000000000000840804100000000000"));
    // An entry for Put a=b at index 2, term 1, empty header, prevCrc 0.
    let irr = hex("320a120812060a0161120162a20600");
    let entry = Entry {
        kind: ENTRY_NORMAL,
        term: 1,
        index: 2,
        data: &irr,
    }
    .encode();
    assert_eq!(entry, hex("080010011802220f320a120812060a0161120162a20600"));
    let crc = crc32c::crc32c_append(0, &entry);
    assert_eq!(crc, 0x9d78_e8c3);
    let f = frame(ENTRY, crc, Some(&entry));
    let mut want = hex("2100000000000087080210c3d1e3eb091a17");
    want.extend_from_slice(&entry);
    want.extend_from_slice(&[0; 7]);
    assert_eq!(f, want);
    assert_eq!(f.len(), 48);
    // The state record chained after it.
    let hs = HardState {
        term: 1,
        vote: 0x8e9e_05c5_2164_694d,
        commit: 2,
    };
    assert_eq!(hs.encode(), hex("080110cdd2918bd2b881cf8e011802"));
    let crc = crc32c::crc32c_append(crc, &hs.encode());
    assert_eq!(crc, 0xb677_4491);
    assert_eq!(
        frame(STATE, crc, Some(&hs.encode())),
        hex("19000000000000870803109189ddb30b1a0f080110cdd2918bd2b881cf8e01180200000000000000")
    );
    assert_eq!(HardState::decode(&hs.encode()), Ok(hs));
    assert_eq!(Entry::decode(&entry).unwrap().data, &irr[..]);
}

#[test]
fn every_frame_is_aligned_and_bounded() {
    for len in 0..80 {
        let data = vec![7u8; len];
        let f = frame(ENTRY, u32::MAX, Some(&data));
        assert_eq!(f.len() % 8, 0, "{len}");
        let word = u64::from_le_bytes(f[..8].try_into().unwrap());
        let n = (word & !(0xff << 56)) as usize;
        let pad = if word >> 63 == 1 { (word >> 56) & 7 } else { 0 } as usize;
        assert_eq!(8 + n + pad, f.len(), "{len}");
        assert_eq!(
            decode_record(&f[8..8 + n]),
            Ok((ENTRY, u32::MAX, &data[..]))
        );
        let entry = Entry {
            kind: ENTRY_NORMAL,
            term: u64::MAX,
            index: u64::MAX,
            data: &data,
        }
        .encode();
        if len > 0 {
            assert!(frame(ENTRY, u32::MAX, Some(&entry)).len() <= entry_frame_bound(len));
        }
    }
}

#[test]
fn names_parse_as_etcd_writes_them() {
    assert_eq!(
        parse_name("0000000000000001-00000000000186a1.wal"),
        Some((1, 0x186a1))
    );
    for bad in [
        "0.tmp",
        "0000000000000000-0000000000000000.wal.broken",
        "000000000000000-00000000000000000.wal",
        "0000000000000000-000000000000000G.wal",
    ] {
        assert_eq!(parse_name(bad), None, "{bad}");
    }
}

/// The WAL `etcdutl snapshot restore` writes for one member, preallocated.
fn restored(dir: &Path) -> PathBuf {
    let node = 0x8e9e_05c5_2164_694du64;
    let mut b = Vec::new();
    let mut crc = 0u32;
    b.extend(frame(CRC, 0, None));
    let mut push = |b: &mut Vec<u8>, kind, data: Vec<u8>| {
        crc = crc32c::crc32c_append(crc, &data);
        b.extend(frame(kind, crc, Some(&data)));
    };
    let mut md = Vec::new();
    put_uint(&mut md, 1, node);
    put_uint(&mut md, 2, 0xcdf8_1819_4e3a_8c32);
    push(&mut b, METADATA, md);
    push(&mut b, SNAPSHOT, hex("08001000"));
    let cc = Entry {
        kind: ENTRY_CONF_CHANGE,
        term: 1,
        index: 1,
        data: b"conf change",
    }
    .encode();
    push(&mut b, ENTRY, cc);
    push(
        &mut b,
        STATE,
        HardState {
            term: 1,
            vote: node,
            commit: 1,
        }
        .encode(),
    );
    let mut snap = hex("080110011a0d08");
    snap.extend(hex("cdd2918bd2b881cf8e012800"));
    push(&mut b, SNAPSHOT, snap);
    b.resize(64 * 1024, 0);
    let path = dir.join("0000000000000000-0000000000000000.wal");
    std::fs::write(&path, b).unwrap();
    path
}

#[test]
fn a_restored_wal_reads_back_and_takes_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = restored(dir.path());
    let wal = read(dir.path()).unwrap();
    assert_eq!(wal.kinds, [CRC, METADATA, SNAPSHOT, ENTRY, STATE, SNAPSHOT]);
    assert_eq!(wal.last_entry, Some((1, 1)));
    assert_eq!(wal.conf_changes, 1);
    assert_eq!(
        wal.snapshots.last(),
        Some(&SnapshotMark { index: 1, term: 1 })
    );
    assert_eq!(wal.state.map(|s| s.commit), Some(1));
    assert_eq!(wal.tail.file_len, 64 * 1024);
    let mut batch = Batch::after(&wal).unwrap();
    assert_eq!(batch.push(b"first"), 2);
    assert_eq!(batch.push(&vec![9u8; 5000]), 3);
    let back = append(dir.path(), &wal, batch).unwrap();
    assert_eq!(back.last_entry, Some((3, 1)));
    assert_eq!(back.entries, 3);
    assert_eq!(
        back.state,
        Some(HardState {
            term: 1,
            vote: 0x8e9e_05c5_2164_694d,
            commit: 3
        })
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), back.tail.end);
    // Again, on the WAL as it now is: the CRC chain continues.
    let mut batch = Batch::after(&back).unwrap();
    batch.push(b"third");
    let again = append(dir.path(), &back, batch).unwrap();
    assert_eq!(again.last_entry, Some((4, 1)));
    assert_eq!(again.metadata, wal.metadata);
}

#[test]
fn a_flipped_bit_anywhere_is_refused_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = restored(dir.path());
    let wal = read(dir.path()).unwrap();
    let mut batch = Batch::after(&wal).unwrap();
    batch.push(b"a revision");
    let back = append(dir.path(), &wal, batch).unwrap();
    let good = std::fs::read(&path).unwrap();
    let mut refused = 0;
    for byte in 0..good.len() {
        let mut bad = good.clone();
        bad[byte] ^= 0x10;
        std::fs::write(&path, &bad).unwrap();
        match read(dir.path()) {
            Err(WalError::Corrupted { offset, .. }) => {
                // A flip in the crc record that opens the file (the seed, which etcd
                // cannot check either) shows at the next record.
                assert!(
                    offset <= byte as u64 || (byte < 16 && offset == 16),
                    "byte {byte} reported at {offset}"
                );
                refused += 1;
            }
            Err(_) => refused += 1,
            // A flip in padding is invisible to etcd too; one that zeroes a length
            // word ends the records early for etcd too (what `append`'s read-back
            // catches); anything else must be refused.
            Ok(w) => assert!(
                w == back || w.tail.end < back.tail.end,
                "byte {byte} flipped and read as {w:?}"
            ),
        }
    }
    assert!(refused > good.len() / 2, "{refused} of {}", good.len());
}

#[test]
fn files_after_a_cut_chain_their_crc() {
    let dir = tempfile::tempdir().unwrap();
    restored(dir.path());
    let wal = read(dir.path()).unwrap();
    // A second file as etcd's cut() writes it: crc, metadata, state, then entries.
    let mut b = frame(CRC, wal.tail.crc, None);
    let mut crc = wal.tail.crc;
    for (kind, data) in [
        (METADATA, wal.metadata.clone()),
        (STATE, wal.state.unwrap().encode()),
    ] {
        crc = crc32c::crc32c_append(crc, &data);
        b.extend(frame(kind, crc, Some(&data)));
    }
    let next = dir.path().join("0000000000000001-0000000000000002.wal");
    std::fs::write(&next, &b).unwrap();
    let two = read(dir.path()).unwrap();
    assert_eq!(two.files.len(), 2);
    assert_eq!(two.tail.path, next);
    let mut batch = Batch::after(&two).unwrap();
    batch.push(b"x");
    assert_eq!(
        append(dir.path(), &two, batch).unwrap().last_entry,
        Some((2, 1))
    );
    // A crc record that does not continue the chain is refused.
    let mut bad = frame(CRC, wal.tail.crc ^ 1, None);
    bad.extend_from_slice(&b[16..]);
    std::fs::write(&next, &bad).unwrap();
    let e = read(dir.path()).unwrap_err().to_string();
    assert!(e.contains("crc record says"), "{e}");
}
