//! The ABI's header-map serialization: a little-endian u32 count N, N pairs of (u32 key length,
//! u32 value length), then each key and value followed by a NUL byte.

/// A header map as filters see it: ordered, duplicates allowed, keys lowercase, HTTP/2 pseudo
/// headers (`:method`, `:path`, `:authority`, `:scheme`, `:status`) included.
pub type HeaderMap = Vec<(String, Vec<u8>)>;

pub fn serialize(map: &[(String, Vec<u8>)]) -> Vec<u8> {
    let size = 4 + map
        .iter()
        .map(|(k, v)| 8 + k.len() + v.len() + 2)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Why a serialized map could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("serialized header map is truncated")]
    Truncated,
    #[error("header name is not UTF-8")]
    InvalidName,
}

/// Parses a serialized map; every length is checked against the input, so hostile input gives
/// an error, never a panic or an oversized allocation.
pub fn deserialize(bytes: &[u8]) -> Result<HeaderMap, DecodeError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let read_u32 = |at: usize| -> Result<usize, DecodeError> {
        let raw = bytes.get(at..at + 4).ok_or(DecodeError::Truncated)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    };
    let count = read_u32(0)?;
    // Each pair needs at least 10 bytes (two lengths and two NULs).
    if count > bytes.len() / 10 {
        return Err(DecodeError::Truncated);
    }
    let mut sizes = Vec::with_capacity(count);
    for i in 0..count {
        sizes.push((read_u32(4 + i * 8)?, read_u32(8 + i * 8)?));
    }
    let mut at = 4 + count * 8;
    let mut map = Vec::with_capacity(count);
    for (klen, vlen) in sizes {
        let key = bytes.get(at..at + klen).ok_or(DecodeError::Truncated)?;
        at += klen + 1;
        let value = bytes.get(at..at + vlen).ok_or(DecodeError::Truncated)?;
        at += vlen + 1;
        if at > bytes.len() {
            return Err(DecodeError::Truncated);
        }
        let key = std::str::from_utf8(key).map_err(|_| DecodeError::InvalidName)?;
        map.push((key.to_ascii_lowercase(), value.to_vec()));
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let map = vec![
            (":path".to_string(), b"/a".to_vec()),
            ("x".to_string(), Vec::new()),
            ("set-cookie".to_string(), b"a=1".to_vec()),
            ("set-cookie".to_string(), b"b=2".to_vec()),
        ];
        assert_eq!(deserialize(&serialize(&map)), Ok(map));
        assert_eq!(deserialize(&serialize(&[])), Ok(Vec::new()));
        assert_eq!(deserialize(&[]), Ok(Vec::new()));
    }

    #[test]
    fn hostile_input_is_an_error() {
        assert_eq!(deserialize(&[1, 0]), Err(DecodeError::Truncated));
        // Claims u32::MAX pairs.
        assert_eq!(
            deserialize(&[255, 255, 255, 255, 0, 0]),
            Err(DecodeError::Truncated)
        );
        // One pair whose key length runs past the end.
        let mut bad = serialize(&[("k".into(), b"v".to_vec())]);
        bad[4] = 200;
        assert_eq!(deserialize(&bad), Err(DecodeError::Truncated));
        let mut bad = serialize(&[("k".into(), b"v".to_vec())]);
        let key_at = 12;
        bad[key_at] = 0xff;
        assert_eq!(deserialize(&bad), Err(DecodeError::InvalidName));
    }
}
