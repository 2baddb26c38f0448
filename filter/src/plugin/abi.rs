//! Panic-free wrappers over the proxy-wasm host ABI.
//!
//! The SDK's `hostcalls` panic on any status they do not expect, and a panic kills the
//! worker's VM. These wrappers return `Err(status)` instead. Only `dispatch_*` stay with the
//! SDK, because its dispatcher must register the callout token to route the reply.

#![allow(clashing_extern_declarations)]

use std::ptr::{null, null_mut};

pub const MAP_REQUEST_HEADERS: u32 = 0;
pub const MAP_RESPONSE_HEADERS: u32 = 2;
pub const MAP_HTTP_CALL_RESPONSE_HEADERS: u32 = 6;
pub const BUFFER_REQUEST_BODY: u32 = 0;
pub const BUFFER_RESPONSE_BODY: u32 = 1;
pub const BUFFER_HTTP_CALL_RESPONSE_BODY: u32 = 4;
pub const BUFFER_GRPC_RECEIVE: u32 = 5;
pub const BUFFER_PLUGIN_CONFIGURATION: u32 = 7;
pub const STREAM_REQUEST: u32 = 0;
pub const STREAM_RESPONSE: u32 = 1;
pub const METRIC_COUNTER: u32 = 0;
pub const METRIC_GAUGE: u32 = 1;
pub const METRIC_HISTOGRAM: u32 = 2;

const STATUS_OK: u32 = 0;
const STATUS_NOT_FOUND: u32 = 1;
pub const STATUS_CAS_MISMATCH: u32 = 8;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_buffer_bytes(
        buffer_type: u32,
        start: usize,
        size: usize,
        data: *const u8,
        data_size: usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_continue_stream(stream_type: u32) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
    ) -> u32;
    fn proxy_set_property(
        path_data: *const u8,
        path_size: usize,
        value_data: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
    fn proxy_record_metric(metric_id: u32, value: u64) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_data: *mut *mut u8,
        return_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
}

/// Takes ownership of memory the host allocated through the SDK's `proxy_on_memory_allocate`.
///
/// # Safety
/// `data` must be null or point to `size` bytes allocated by that allocator.
unsafe fn take_host_bytes(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        None
    } else {
        Some(Vec::from_raw_parts(data, size, size))
    }
}

fn status(code: u32) -> Result<(), u32> {
    if code == STATUS_OK {
        Ok(())
    } else {
        Err(code)
    }
}

pub fn get_map(map_type: u32) -> Result<Vec<(String, String)>, u32> {
    let mut data = null_mut();
    let mut size = 0;
    let code = unsafe { proxy_get_header_map_pairs(map_type, &mut data, &mut size) };
    status(code)?;
    let bytes = unsafe { take_host_bytes(data, size) }.unwrap_or_default();
    Ok(deserialize_map(&bytes))
}

pub fn get_map_value(map_type: u32, key: &str) -> Result<Option<String>, u32> {
    let mut data = null_mut();
    let mut size = 0;
    let code = unsafe {
        proxy_get_header_map_value(map_type, key.as_ptr(), key.len(), &mut data, &mut size)
    };
    match code {
        STATUS_OK => Ok(unsafe { take_host_bytes(data, size) }
            .map(|b| String::from_utf8_lossy(&b).into_owned())),
        STATUS_NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn set_map_value(map_type: u32, key: &str, value: Option<&str>) -> Result<(), u32> {
    let code = match value {
        Some(value) => unsafe {
            proxy_replace_header_map_value(
                map_type,
                key.as_ptr(),
                key.len(),
                value.as_ptr(),
                value.len(),
            )
        },
        None => unsafe { proxy_remove_header_map_value(map_type, key.as_ptr(), key.len()) },
    };
    status(code)
}

pub fn get_buffer(buffer_type: u32, start: usize, max_size: usize) -> Result<Option<Vec<u8>>, u32> {
    let mut data = null_mut();
    let mut size = 0;
    let code =
        unsafe { proxy_get_buffer_bytes(buffer_type, start, max_size, &mut data, &mut size) };
    match code {
        STATUS_OK => Ok(unsafe { take_host_bytes(data, size) }),
        STATUS_NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn set_buffer(buffer_type: u32, start: usize, size: usize, value: &[u8]) -> Result<(), u32> {
    status(unsafe { proxy_set_buffer_bytes(buffer_type, start, size, value.as_ptr(), value.len()) })
}

pub fn send_local_response(
    status_code: u32,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), u32> {
    let headers = serialize_map(headers);
    let details = b"aigate";
    status(unsafe {
        proxy_send_local_response(
            status_code,
            details.as_ptr(),
            details.len(),
            if body.is_empty() {
                null()
            } else {
                body.as_ptr()
            },
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

pub fn continue_stream(stream_type: u32) -> Result<(), u32> {
    status(unsafe { proxy_continue_stream(stream_type) })
}

/// Makes the following host calls act for context `context_id` (for example, start a
/// callout that belongs to the root context and so outlives the current stream).
pub fn set_effective_context(context_id: u32) -> Result<(), u32> {
    status(unsafe { proxy_set_effective_context(context_id) })
}

fn serialize_path(path: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, segment) in path.iter().enumerate() {
        if index > 0 {
            out.push(0);
        }
        out.extend_from_slice(segment.as_bytes());
    }
    out
}

pub fn get_property(path: &[&str]) -> Result<Option<Vec<u8>>, u32> {
    let path = serialize_path(path);
    let mut data = null_mut();
    let mut size = 0;
    let code = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    match code {
        STATUS_OK => Ok(unsafe { take_host_bytes(data, size) }),
        STATUS_NOT_FOUND => Ok(None),
        other => Err(other),
    }
}

pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), u32> {
    let path = serialize_path(path);
    status(unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) })
}

pub fn now_nanos() -> Result<u64, u32> {
    let mut nanos = 0u64;
    status(unsafe { proxy_get_current_time_nanoseconds(&mut nanos) })?;
    Ok(nanos)
}

pub fn define_metric(metric_type: u32, name: &str) -> Result<u32, u32> {
    let mut id = 0;
    status(unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

pub fn increment_metric(id: u32, offset: i64) -> Result<(), u32> {
    status(unsafe { proxy_increment_metric(id, offset) })
}

pub fn record_metric(id: u32, value: u64) -> Result<(), u32> {
    status(unsafe { proxy_record_metric(id, value) })
}

pub fn get_shared_data(key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), u32> {
    let mut data = null_mut();
    let mut size = 0;
    let mut cas = 0;
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas) };
    match code {
        STATUS_OK => Ok((
            unsafe { take_host_bytes(data, size) },
            if cas == 0 { None } else { Some(cas) },
        )),
        STATUS_NOT_FOUND => Ok((None, None)),
        other => Err(other),
    }
}

pub fn set_shared_data(key: &str, value: &[u8], cas: Option<u32>) -> Result<(), u32> {
    status(unsafe {
        proxy_set_shared_data(
            key.as_ptr(),
            key.len(),
            value.as_ptr(),
            value.len(),
            cas.unwrap_or(0),
        )
    })
}

/// The proxy-wasm map encoding: count, then (key length, value length) pairs, then each key
/// and value followed by a NUL byte.
pub fn serialize_map(pairs: &[(String, String)]) -> Vec<u8> {
    let mut size = 4;
    for (key, value) in pairs {
        size += 8 + key.len() + value.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (key, value) in pairs {
        out.extend_from_slice(key.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

pub fn deserialize_map(bytes: &[u8]) -> Vec<(String, String)> {
    let read_u32 = |at: usize| -> Option<usize> {
        let raw: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_le_bytes(raw) as usize)
    };
    let Some(count) = read_u32(0) else {
        return Vec::new();
    };
    let mut pairs = Vec::with_capacity(count.min(256));
    let mut data_at = 4 + count.saturating_mul(8);
    for index in 0..count {
        let (Some(key_len), Some(value_len)) = (read_u32(4 + index * 8), read_u32(8 + index * 8))
        else {
            break;
        };
        let key = bytes.get(data_at..data_at + key_len);
        data_at += key_len + 1;
        let value = bytes.get(data_at..data_at + value_len);
        data_at += value_len + 1;
        match (key, value) {
            (Some(key), Some(value)) => pairs.push((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            )),
            _ => break,
        }
    }
    pairs
}
