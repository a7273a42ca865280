//! Example filter in Zig: sets the request and response headers its configuration names,
//! through the C SDK (`proxy_wasm.h` and its helpers, imported with @cImport).
//!
//!   {"request": {"x-hello": "world"}, "response": {"x-served-by": "zig"}}
//!
//! Both members are optional; anything else (an unknown member, a value that is not a
//! string, text that is not JSON) refuses the configuration with a log line naming the field.
//! One configuration per VM: wasmesh gives each plugin VM replicas of its own.

const std = @import("std");
const c = @cImport({
    // Zig exports its own callbacks below; the header's C declarations would clash.
    @cDefine("PROXY_WASM_NO_CALLBACKS", "1");
    @cInclude("proxy_wasm_helpers.h");
});

const allocator = std.heap.c_allocator;

const Header = struct {
    name: [:0]u8,
    value: [:0]u8,
};

const Rules = struct {
    request: std.ArrayList(Header) = .empty,
    response: std.ArrayList(Header) = .empty,

    fn deinit(self: *Rules) void {
        for ([_]*std.ArrayList(Header){ &self.request, &self.response }) |list| {
            for (list.items) |h| {
                allocator.free(h.name);
                allocator.free(h.value);
            }
            list.deinit(allocator);
        }
    }
};

var active: Rules = .{};

fn log(level: c.proxy_log_level_t, comptime format: []const u8, args: anytype) void {
    var buffer: [512]u8 = undefined;
    const line = std.fmt.bufPrint(&buffer, format, args) catch buffer[0..];
    _ = c.proxy_log(level, line.ptr, line.len);
}

fn kindName(value: std.json.Value) []const u8 {
    return switch (value) {
        .null => "null",
        .bool => "a boolean",
        .integer, .float, .number_string => "a number",
        .string => "a string",
        .array => "an array",
        .object => "an object",
    };
}

const Refused = error{Refused} || std.mem.Allocator.Error;

fn readHeaders(field: []const u8, value: std.json.Value, into: *std.ArrayList(Header)) Refused!void {
    const object = switch (value) {
        .object => |o| o,
        else => {
            log(c.PROXY_LOG_ERROR, "configuration field `{s}`: expected an object of header names to values, found {s}", .{ field, kindName(value) });
            return error.Refused;
        },
    };
    var members = object.iterator();
    while (members.next()) |member| {
        const name = member.key_ptr.*;
        const text = switch (member.value_ptr.*) {
            .string => |s| s,
            else => |other| {
                log(c.PROXY_LOG_ERROR, "configuration field `{s}.{s}`: expected a string, found {s}", .{ field, name, kindName(other) });
                return error.Refused;
            },
        };
        if (name.len == 0) {
            log(c.PROXY_LOG_ERROR, "configuration field `{s}`: a header name is empty", .{field});
            return error.Refused;
        }
        const lower = try allocator.allocSentinel(u8, name.len, 0);
        _ = std.ascii.lowerString(lower, name);
        const copy = try allocator.dupeZ(u8, text);
        try into.append(allocator, .{ .name = lower, .value = copy });
    }
}

fn configure(document: []const u8) Refused!Rules {
    var diagnostics: std.json.Diagnostics = .{};
    var scanner = std.json.Scanner.initCompleteInput(allocator, document);
    defer scanner.deinit();
    scanner.enableDiagnostics(&diagnostics);
    const parsed = std.json.parseFromTokenSource(std.json.Value, allocator, &scanner, .{}) catch |err| {
        log(c.PROXY_LOG_ERROR, "configuration: line {d} column {d}: {s}", .{ diagnostics.getLine(), diagnostics.getColumn(), @errorName(err) });
        return error.Refused;
    };
    defer parsed.deinit();
    const object = switch (parsed.value) {
        .object => |o| o,
        else => {
            log(c.PROXY_LOG_ERROR, "configuration: expected an object, found {s}", .{kindName(parsed.value)});
            return error.Refused;
        },
    };
    var rules: Rules = .{};
    errdefer rules.deinit();
    var members = object.iterator();
    while (members.next()) |member| {
        const key = member.key_ptr.*;
        if (std.mem.eql(u8, key, "request")) {
            try readHeaders(key, member.value_ptr.*, &rules.request);
        } else if (std.mem.eql(u8, key, "response")) {
            try readHeaders(key, member.value_ptr.*, &rules.response);
        } else {
            log(c.PROXY_LOG_ERROR, "configuration field `{s}`: unknown field, expected `request` or `response`", .{key});
            return error.Refused;
        }
    }
    return rules;
}

export fn proxy_on_configure(root_context_id: u32, plugin_configuration_size: u32) u32 {
    _ = root_context_id;
    _ = plugin_configuration_size;
    var size: usize = 0;
    const raw = c.pw_plugin_config(&size) orelse return 0;
    defer std.c.free(raw);
    const text = std.mem.trim(u8, raw[0..size], " \t\r\n");
    const next = configure(if (text.len == 0) "{}" else text) catch |err| {
        if (err == error.OutOfMemory) log(c.PROXY_LOG_ERROR, "configuration: out of memory", .{});
        return 0;
    };
    active.deinit();
    active = next;
    return 1;
}

fn apply(map: c.proxy_map_type_t, headers: []const Header) void {
    for (headers) |h| _ = c.pw_header_set(map, h.name.ptr, h.value.ptr);
}

export fn proxy_on_request_headers(context_id: u32, num_headers: u32, end_of_stream: u32) u32 {
    _ = context_id;
    _ = num_headers;
    _ = end_of_stream;
    apply(c.PROXY_MAP_HTTP_REQUEST_HEADERS, active.request.items);
    return c.PROXY_ACTION_CONTINUE;
}

export fn proxy_on_response_headers(context_id: u32, num_headers: u32, end_of_stream: u32) u32 {
    _ = context_id;
    _ = num_headers;
    _ = end_of_stream;
    apply(c.PROXY_MAP_HTTP_RESPONSE_HEADERS, active.response.items);
    return c.PROXY_ACTION_CONTINUE;
}
