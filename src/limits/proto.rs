//! Hand-written protobuf for the two messages of `envoy.service.ratelimit.v3.RateLimitService/
//! ShouldRateLimit` (a code generator and a protobuf runtime would cost far more Wasm size
//! than these few fields):
//!
//! ```text
//! RateLimitRequest   { string domain = 1; repeated RateLimitDescriptor descriptors = 2; uint32 hits_addend = 3; }
//! RateLimitDescriptor{ repeated Entry entries = 1; }           Entry { string key = 1; string value = 2; }
//! RateLimitResponse  { Code overall_code = 1; repeated DescriptorStatus statuses = 2; ... }
//! DescriptorStatus   { Code code = 1; RateLimit current_limit = 2; uint32 limit_remaining = 3;
//!                      google.protobuf.Duration duration_until_reset = 4; ... }
//! RateLimit          { uint32 requests_per_unit = 1; Unit unit = 2; string name = 3; }
//! Duration           { int64 seconds = 1; int32 nanos = 2; }
//! Code: UNKNOWN = 0, OK = 1, OVER_LIMIT = 2
//! ```
//! Unknown fields are skipped, as protobuf requires.

pub const CODE_OK: u32 = 1;
pub const CODE_OVER_LIMIT: u32 = 2;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const FIXED32: u8 = 5;

// ---------------------------------------------------------------- encoding

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn put_tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A `RateLimitRequest`. Each descriptor is a list of (key, value) entries.
pub fn encode_request(
    domain: &str,
    descriptors: &[Vec<(String, String)>],
    hits_addend: u32,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    put_bytes(&mut out, 1, domain.as_bytes());
    for descriptor in descriptors {
        let mut message = Vec::with_capacity(48);
        for (key, value) in descriptor {
            let mut entry = Vec::with_capacity(key.len() + value.len() + 4);
            put_bytes(&mut entry, 1, key.as_bytes());
            put_bytes(&mut entry, 2, value.as_bytes());
            put_bytes(&mut message, 1, &entry);
        }
        put_bytes(&mut out, 2, &message);
    }
    if hits_addend != 0 {
        put_tag(&mut out, 3, VARINT);
        put_varint(&mut out, u64::from(hits_addend));
    }
    out
}

// ---------------------------------------------------------------- decoding

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitResponse {
    pub overall_code: u32,
    pub statuses: Vec<DescriptorStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescriptorStatus {
    pub code: u32,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    pub duration_until_reset_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    pub unit: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeError;

enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Fields<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Fields { bytes, at: 0 }
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.bytes.get(self.at).ok_or(DecodeError)?;
            self.at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError)
    }

    fn skip(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).ok_or(DecodeError)?;
        let slice = self.bytes.get(self.at..end).ok_or(DecodeError)?;
        self.at = end;
        Ok(slice)
    }

    /// The next (field number, value), or None at the end.
    fn next_field(&mut self) -> Result<Option<(u64, Value<'a>)>, DecodeError> {
        if self.at >= self.bytes.len() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let field = tag >> 3;
        let value = match (tag & 7) as u8 {
            VARINT => Value::Varint(self.varint()?),
            FIXED64 => {
                self.skip(8)?;
                Value::Fixed
            }
            LEN => {
                let len = usize::try_from(self.varint()?).map_err(|_| DecodeError)?;
                Value::Bytes(self.skip(len)?)
            }
            FIXED32 => {
                self.skip(4)?;
                Value::Fixed
            }
            _ => return Err(DecodeError), // groups are not used by these messages
        };
        Ok(Some((field, value)))
    }
}

pub fn decode_response(bytes: &[u8]) -> Result<RateLimitResponse, DecodeError> {
    let mut response = RateLimitResponse::default();
    let mut fields = Fields::new(bytes);
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Varint(code)) => response.overall_code = code as u32,
            (2, Value::Bytes(status)) => response.statuses.push(decode_status(status)?),
            _ => {}
        }
    }
    Ok(response)
}

fn decode_status(bytes: &[u8]) -> Result<DescriptorStatus, DecodeError> {
    let mut status = DescriptorStatus::default();
    let mut fields = Fields::new(bytes);
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Varint(code)) => status.code = code as u32,
            (2, Value::Bytes(limit)) => status.current_limit = Some(decode_limit(limit)?),
            (3, Value::Varint(remaining)) => status.limit_remaining = remaining as u32,
            (4, Value::Bytes(duration)) => {
                status.duration_until_reset_ms = Some(decode_duration_ms(duration)?)
            }
            _ => {}
        }
    }
    Ok(status)
}

fn decode_limit(bytes: &[u8]) -> Result<CurrentLimit, DecodeError> {
    let mut limit = CurrentLimit::default();
    let mut fields = Fields::new(bytes);
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Varint(n)) => limit.requests_per_unit = n as u32,
            (2, Value::Varint(unit)) => limit.unit = unit as u32,
            _ => {}
        }
    }
    Ok(limit)
}

fn decode_duration_ms(bytes: &[u8]) -> Result<u64, DecodeError> {
    let (mut seconds, mut nanos) = (0i64, 0i64);
    let mut fields = Fields::new(bytes);
    while let Some((field, value)) = fields.next_field()? {
        match (field, value) {
            (1, Value::Varint(n)) => seconds = n as i64,
            (2, Value::Varint(n)) => nanos = i64::from(n as i32),
            _ => {}
        }
    }
    let ms = seconds
        .saturating_mul(1000)
        .saturating_add(nanos / 1_000_000);
    Ok(u64::try_from(ms).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn descriptor(entries: &[(&str, &str)]) -> Vec<(String, String)> {
        entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn request_bytes_match_protoc() {
        // Expected bytes as protoc encodes
        // RateLimitRequest{domain:"aigate", descriptors:[{entries:[{key:"k",value:"v"}]}], hits_addend:300}
        let bytes = encode_request("aigate", &[descriptor(&[("k", "v")])], 300);
        let expected: &[u8] = &[
            0x0a, 6, b'a', b'i', b'g', b'a', b't', b'e', // domain
            0x12, 8, // descriptors, 8 bytes
            0x0a, 6, // entries, 6 bytes
            0x0a, 1, b'k', 0x12, 1, b'v', // key, value
            0x18, 0xac, 0x02, // hits_addend 300
        ];
        assert_eq!(bytes, expected);
    }

    #[test]
    fn zero_hits_addend_is_left_out_as_proto3_does() {
        let bytes = encode_request("d", &[], 0);
        assert_eq!(bytes, vec![0x0a, 1, b'd']);
    }

    #[test]
    fn decodes_a_full_response_and_skips_unknown_fields() {
        // overall_code OVER_LIMIT; two statuses; an unknown string field 3 (response_headers_to_add
        // is a message, skipped), an unknown fixed32 and fixed64.
        let mut status_ok = vec![0x08, 1]; // code OK
        status_ok.extend_from_slice(&[0x12, 4, 0x08, 100, 0x10, 2]); // current_limit {100, MINUTE}
        status_ok.extend_from_slice(&[0x18, 42]); // limit_remaining 42
        status_ok.extend_from_slice(&[0x22, 5, 0x08, 12, 0x10, 0xe8, 0x07]); // {seconds: 12, nanos: 1000}
        let status_over = vec![0x08, 2, 0x18, 0];
        let mut bytes = vec![0x08, 2];
        bytes.extend_from_slice(&[0x12, status_ok.len() as u8]);
        bytes.extend_from_slice(&status_ok);
        bytes.extend_from_slice(&[0x12, status_over.len() as u8]);
        bytes.extend_from_slice(&status_over);
        bytes.extend_from_slice(&[0x1a, 2, b'h', b'i']);
        bytes.extend_from_slice(&[0x2d, 1, 2, 3, 4]); // field 5 fixed32
        bytes.extend_from_slice(&[0x31, 1, 2, 3, 4, 5, 6, 7, 8]); // field 6 fixed64
        let response = decode_response(&bytes).unwrap();
        assert_eq!(response.overall_code, CODE_OVER_LIMIT);
        assert_eq!(response.statuses.len(), 2);
        let first = &response.statuses[0];
        assert_eq!(first.code, CODE_OK);
        assert_eq!(
            first.current_limit,
            Some(CurrentLimit {
                requests_per_unit: 100,
                unit: 2
            })
        );
        assert_eq!(first.limit_remaining, 42);
        assert_eq!(first.duration_until_reset_ms, Some(12_000));
        assert_eq!(response.statuses[1].code, CODE_OVER_LIMIT);
        assert_eq!(response.statuses[1].current_limit, None);
    }

    #[test]
    fn empty_response_is_unknown_code() {
        assert_eq!(decode_response(b"").unwrap(), RateLimitResponse::default());
    }

    #[test]
    fn truncated_or_malformed_input_is_an_error() {
        assert_eq!(decode_response(&[0x08]), Err(DecodeError));
        assert_eq!(decode_response(&[0x12, 5, 0x08]), Err(DecodeError));
        assert_eq!(decode_response(&[0x0b]), Err(DecodeError)); // group start
        assert_eq!(
            decode_response(&[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
            ]),
            Err(DecodeError)
        );
        assert_eq!(decode_response(&[0x12, 3, 0x22, 5, 0x08]), Err(DecodeError));
    }

    #[test]
    fn varints_round_trip() {
        for value in [
            0u64,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(Fields::new(&out).varint().unwrap(), value);
        }
    }
}
