//! Decoding of `content-encoding: gzip` / `deflate` bodies that the filter must read.
//!
//! The filter asks upstreams for `accept-encoding: identity`, but a server may compress
//! anyway. A body the filter rewrites (translation, response stages) or reads (usage, a
//! transformer's reply) is decoded here; anything else compressed is refused with a clear error.

use std::borrow::Cow;

use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::inflate::{decompress_to_vec_with_limit, decompress_to_vec_zlib_with_limit};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Decoded bodies larger than this are refused (a compression bomb must not eat the VM).
pub const MAX_DECODED_BYTES: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// An encoding the filter can not decode (for example `br`, `zstd`).
    Unsupported(String),
    /// The bytes are not valid for the encoding, or decode past `MAX_DECODED_BYTES`.
    Corrupt(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unsupported(name) => {
                write!(f, "content-encoding {name:?} is not supported")
            }
            DecodeError::Corrupt(why) => write!(f, "the body could not be decoded: {why}"),
        }
    }
}

/// True when `content-encoding` says the body is as it is.
pub fn is_identity(content_encoding: Option<&str>) -> bool {
    content_encoding.is_none_or(|value| {
        let value = value.trim();
        value.is_empty() || value.eq_ignore_ascii_case("identity")
    })
}

/// Decodes a body by its `content-encoding` header value (None or `identity`: unchanged).
pub fn decode<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if is_identity(content_encoding) {
        return Ok(Cow::Borrowed(body));
    }
    let name = content_encoding
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match name.as_str() {
        "gzip" | "x-gzip" => gunzip(body).map(Cow::Owned),
        // HTTP's "deflate" is zlib-wrapped; some servers send raw deflate instead.
        "deflate" => decompress_to_vec_zlib_with_limit(body, MAX_DECODED_BYTES)
            .or_else(|_| decompress_to_vec_with_limit(body, MAX_DECODED_BYTES))
            .map(Cow::Owned)
            .map_err(|_| DecodeError::Corrupt("invalid deflate data or too large")),
        _ => Err(DecodeError::Unsupported(name)),
    }
}

const FTEXT_MASK: u8 = 0b1110_0000;
const FHCRC: u8 = 0b0000_0010;
const FEXTRA: u8 = 0b0000_0100;
const FNAME: u8 = 0b0000_1000;
const FCOMMENT: u8 = 0b0001_0000;

/// One gzip member (RFC 1952): header, raw deflate data, CRC-32 and size trailer. The size
/// in the trailer is checked; the CRC is not (the deflate data has its own structure).
fn gunzip(body: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let corrupt = |why| DecodeError::Corrupt(why);
    let header = body.get(..10).ok_or(corrupt("gzip header is truncated"))?;
    if header.first() != Some(&0x1f) || header.get(1) != Some(&0x8b) || header.get(2) != Some(&8) {
        return Err(corrupt("not gzip data"));
    }
    let flags = header.get(3).copied().unwrap_or_default();
    if flags & FTEXT_MASK != 0 {
        return Err(corrupt("reserved gzip flags are set"));
    }
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let length = body
            .get(at..at + 2)
            .and_then(|bytes| <[u8; 2]>::try_from(bytes).ok())
            .ok_or(corrupt("gzip extra field is truncated"))?;
        at += 2 + usize::from(u16::from_le_bytes(length));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let rest = body.get(at..).ok_or(corrupt("gzip header is truncated"))?;
            let end = rest
                .iter()
                .position(|b| *b == 0)
                .ok_or(corrupt("gzip header is truncated"))?;
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    let trailer_start = body
        .len()
        .checked_sub(8)
        .filter(|start| *start >= at)
        .ok_or(corrupt("gzip data is truncated"))?;
    let data = body
        .get(at..trailer_start)
        .ok_or(corrupt("gzip data is truncated"))?;
    let expected = body
        .get(trailer_start + 4..)
        .and_then(|bytes| <[u8; 4]>::try_from(bytes).ok())
        .map(u32::from_le_bytes)
        .ok_or(corrupt("gzip trailer is truncated"))?;
    let out = decompress_to_vec_with_limit(data, MAX_DECODED_BYTES)
        .map_err(|_| corrupt("invalid deflate data or too large"))?;
    if out.len() as u32 != expected {
        return Err(corrupt(
            "gzip size does not match (only one gzip member is supported)",
        ));
    }
    Ok(out)
}

/// Length of a complete gzip member header at the start of `bytes`; `Ok(None)` while more
/// bytes are needed to know it.
fn gzip_header_len(bytes: &[u8]) -> Result<Option<usize>, DecodeError> {
    let corrupt = |why| DecodeError::Corrupt(why);
    let Some(header) = bytes.get(..10) else {
        return Ok(None);
    };
    if header.first() != Some(&0x1f) || header.get(1) != Some(&0x8b) || header.get(2) != Some(&8) {
        return Err(corrupt("not gzip data"));
    }
    let flags = header.get(3).copied().unwrap_or_default();
    if flags & FTEXT_MASK != 0 {
        return Err(corrupt("reserved gzip flags are set"));
    }
    let mut at = 10usize;
    if flags & FEXTRA != 0 {
        let Some(length) = bytes
            .get(at..at + 2)
            .and_then(|pair| <[u8; 2]>::try_from(pair).ok())
        else {
            return Ok(None);
        };
        at += 2 + usize::from(u16::from_le_bytes(length));
    }
    for flag in [FNAME, FCOMMENT] {
        if flags & flag != 0 {
            let Some(end) = bytes
                .get(at..)
                .and_then(|rest| rest.iter().position(|b| *b == 0))
            else {
                return Ok(None);
            };
            at += end + 1;
        }
    }
    if flags & FHCRC != 0 {
        at += 2;
    }
    Ok((bytes.len() >= at).then_some(at))
}

/// Decodes a compressed answer piece by piece as it flows (an event stream the filter reads
/// event by event): gzip (one member) or deflate (zlib-wrapped, or raw).
pub struct Inflater {
    gzip: bool,
    /// Bytes held until the gzip header (or, for deflate, the zlib check) can be read.
    pending: Vec<u8>,
    state: Option<Box<InflateState>>,
    ended: bool,
}

/// Decoded bytes one piece may produce: a few bytes must not expand without bound in memory.
const MAX_DECODED_PIECE: usize = MAX_DECODED_BYTES;

impl Inflater {
    pub fn new(content_encoding: &str) -> Result<Inflater, DecodeError> {
        let name = content_encoding.trim().to_ascii_lowercase();
        let gzip = match name.as_str() {
            "gzip" | "x-gzip" => true,
            "deflate" => false,
            _ => return Err(DecodeError::Unsupported(name)),
        };
        Ok(Inflater {
            gzip,
            pending: Vec::new(),
            state: None,
            ended: false,
        })
    }

    /// Decodes the next piece of the body, appending what it yields to `out`.
    pub fn push(&mut self, piece: &[u8], out: &mut Vec<u8>) -> Result<(), DecodeError> {
        if self.ended {
            return Ok(()); // the gzip trailer, or bytes after the end: nothing to yield
        }
        let mut state = match self.state.take() {
            Some(state) => state,
            None => {
                self.pending.extend_from_slice(piece);
                let Some((format, skip)) = self.start()? else {
                    return Ok(());
                };
                let pending = std::mem::take(&mut self.pending);
                let state = InflateState::new_boxed(format);
                self.state = Some(state);
                return self.push(pending.get(skip..).unwrap_or_default(), out);
            }
        };
        let result = self.inflate(&mut state, piece, out);
        self.state = Some(state);
        result
    }

    /// The data format and header length once the start of the body is known.
    fn start(&self) -> Result<Option<(DataFormat, usize)>, DecodeError> {
        if self.gzip {
            return Ok(gzip_header_len(&self.pending)?.map(|at| (DataFormat::Raw, at)));
        }
        let (Some(&first), Some(&second)) = (self.pending.first(), self.pending.get(1)) else {
            return Ok(None);
        };
        let zlib = first & 0x0f == 8 && (u16::from(first) << 8 | u16::from(second)) % 31 == 0;
        Ok(Some((
            if zlib {
                DataFormat::Zlib
            } else {
                DataFormat::Raw
            },
            0,
        )))
    }

    fn inflate(
        &mut self,
        state: &mut InflateState,
        mut input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), DecodeError> {
        const STEP: usize = 32 * 1024;
        let limit = out.len() + MAX_DECODED_PIECE;
        loop {
            let start = out.len();
            out.resize(start + STEP, 0);
            let result = inflate(
                state,
                input,
                out.get_mut(start..).unwrap_or_default(),
                MZFlush::None,
            );
            out.truncate(start + result.bytes_written);
            input = input.get(result.bytes_consumed..).unwrap_or_default();
            match result.status {
                Ok(MZStatus::StreamEnd) => {
                    self.ended = true;
                    return Ok(());
                }
                Ok(_) if result.bytes_consumed == 0 && result.bytes_written == 0 => return Ok(()),
                Ok(_) => {}
                Err(MZError::Buf) => return Ok(()), // every byte taken: wait for more
                Err(_) => return Err(DecodeError::Corrupt("invalid deflate data")),
            }
            if out.len() > limit {
                return Err(DecodeError::Corrupt("a piece decodes to too much data"));
            }
            if input.is_empty() && result.bytes_written < STEP {
                return Ok(());
            }
        }
    }

    /// True once the compressed data ended properly (a body cut short did not).
    pub fn is_complete(&self) -> bool {
        self.ended
    }
}

/// Compresses as a gzip member (tests only: the filter never compresses).
#[cfg(test)]
pub fn gzip_for_tests(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
    out.extend(miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend([0, 0, 0, 0]);
    out.extend((data.len() as u32).to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_borrowed() {
        assert!(matches!(decode(None, b"x"), Ok(Cow::Borrowed(b"x"))));
        assert!(matches!(
            decode(Some(" Identity "), b"x"),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn gzip_round_trip() {
        let text = br#"{"choices":[{"message":{"content":"hello hello hello"}}]}"#;
        let zipped = gzip_for_tests(text);
        assert_eq!(decode(Some("gzip"), &zipped).unwrap().as_ref(), text);
        assert_eq!(decode(Some("X-GZIP"), &zipped).unwrap().as_ref(), text);
    }

    #[test]
    fn gzip_with_file_name_header() {
        let text = b"named";
        let mut zipped = vec![0x1f, 0x8b, 8, FNAME, 0, 0, 0, 0, 0, 255];
        zipped.extend(b"answer.json\0");
        zipped.extend(miniz_oxide::deflate::compress_to_vec(text, 6));
        zipped.extend([0, 0, 0, 0]);
        zipped.extend((text.len() as u32).to_le_bytes());
        assert_eq!(decode(Some("gzip"), &zipped).unwrap().as_ref(), text);
    }

    #[test]
    fn deflate_zlib_and_raw() {
        let text = b"deflated body";
        let zlib = miniz_oxide::deflate::compress_to_vec_zlib(text, 6);
        assert_eq!(decode(Some("deflate"), &zlib).unwrap().as_ref(), text);
        let raw = miniz_oxide::deflate::compress_to_vec(text, 6);
        assert_eq!(decode(Some("deflate"), &raw).unwrap().as_ref(), text);
    }

    /// Pieces of every size, the gzip header split anywhere: the same bytes come out.
    #[test]
    fn inflater_decodes_piece_by_piece() {
        let text: Vec<u8> = (0..600)
            .flat_map(|i| format!("data: {{\"n\":{i}}}\n\n").into_bytes())
            .collect();
        let mut named = vec![
            0x1f,
            0x8b,
            8,
            FNAME | FEXTRA,
            0,
            0,
            0,
            0,
            0,
            255,
            3,
            0,
            1,
            2,
            3,
        ];
        named.extend(b"stream.txt\0");
        named.extend(miniz_oxide::deflate::compress_to_vec(&text, 6));
        named.extend([0u8; 8]);
        for (encoding, zipped) in [
            ("gzip", gzip_for_tests(&text)),
            ("gzip", named),
            (
                "deflate",
                miniz_oxide::deflate::compress_to_vec_zlib(&text, 6),
            ),
            ("deflate", miniz_oxide::deflate::compress_to_vec(&text, 6)),
        ] {
            for size in [1, 2, 7, 11, 4096, zipped.len()] {
                let mut inflater = Inflater::new(encoding).unwrap();
                let mut out = Vec::new();
                for piece in zipped.chunks(size) {
                    inflater.push(piece, &mut out).unwrap();
                }
                assert!(out == text, "{encoding}, pieces of {size}");
                assert!(inflater.is_complete());
            }
        }
        let mut cut = Inflater::new("gzip").unwrap();
        let zipped = gzip_for_tests(&text);
        cut.push(&zipped[..zipped.len() / 2], &mut Vec::new())
            .unwrap();
        assert!(!cut.is_complete());
        assert!(matches!(
            Inflater::new("br"),
            Err(DecodeError::Unsupported(_))
        ));
        let mut bad = Inflater::new("gzip").unwrap();
        assert!(bad
            .push(b"data: {}\n\n plain text", &mut Vec::new())
            .is_err());
    }

    #[test]
    fn refuses_corrupt_and_unknown() {
        assert_eq!(
            decode(Some("br"), b"x").unwrap_err(),
            DecodeError::Unsupported("br".into())
        );
        assert!(matches!(
            decode(Some("gzip"), b"{\"plain\":1}"),
            Err(DecodeError::Corrupt(_))
        ));
        assert!(matches!(
            decode(Some("gzip"), &[0x1f, 0x8b, 8]),
            Err(DecodeError::Corrupt(_))
        ));
        let mut zipped = gzip_for_tests(b"abc");
        let len = zipped.len();
        zipped[len - 4] = 9; // wrong size in the trailer
        assert!(matches!(
            decode(Some("gzip"), &zipped),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
