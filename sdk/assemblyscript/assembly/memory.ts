// Moving bytes across the ABI: UTF-8 text out of AssemblyScript strings, buffers the host
// allocated in this module (through `proxy_on_memory_allocate`) back into managed ones, and
// the header-map serialization of the specification.

// Where host functions write their out-parameters. One callback runs at a time in a VM, and
// the host's allocation callback never touches these, so one set is enough.
export const OUT_PTR: usize = memory.data(8);
export const OUT_SIZE: usize = memory.data(8);
export const OUT_EXTRA: usize = memory.data(8);

/** A name and a value: one header, or one entry of a map. */
export class Pair {
  constructor(public name: string, public value: string) {}
}

/** `text` as UTF-8 bytes. */
export function utf8(text: string): ArrayBuffer {
  return String.UTF8.encode(text);
}

/** The address of a buffer's first byte. */
export function addr(buffer: ArrayBuffer): usize {
  return changetype<usize>(buffer);
}

/** Bytes as text (invalid UTF-8 is decoded leniently, never a trap). */
export function text(buffer: ArrayBuffer): string {
  return String.UTF8.decode(buffer);
}

/**
 * Takes the buffer the host just returned through `OUT_PTR`/`OUT_SIZE`: copies it into a
 * managed `ArrayBuffer` and frees the host's allocation, which this module now owns.
 */
export function takeReturned(): ArrayBuffer {
  const ptr = load<usize>(OUT_PTR);
  const size = load<usize>(OUT_SIZE);
  store<usize>(OUT_PTR, 0);
  store<usize>(OUT_SIZE, 0);
  const out = new ArrayBuffer(<i32>size);
  if (ptr != 0) {
    if (size > 0) memory.copy(addr(out), ptr, size);
    heap.free(ptr);
  }
  return out;
}

/**
 * The specification's map encoding: u32 count, then (u32 name size, u32 value size) per
 * pair, then each name and value followed by a NUL byte; integers little-endian.
 */
export function serializePairs(pairs: Pair[]): ArrayBuffer {
  const names = new Array<ArrayBuffer>(pairs.length);
  const values = new Array<ArrayBuffer>(pairs.length);
  let size: i32 = 4 + 8 * pairs.length;
  for (let i = 0; i < pairs.length; i++) {
    names[i] = utf8(pairs[i].name);
    values[i] = utf8(pairs[i].value);
    size += names[i].byteLength + values[i].byteLength + 2;
  }
  const out = new ArrayBuffer(size);
  const base = addr(out);
  store<u32>(base, pairs.length);
  let data = base + 4 + 8 * <usize>pairs.length;
  for (let i = 0; i < pairs.length; i++) {
    const name = names[i];
    const value = values[i];
    store<u32>(base + 4 + 8 * <usize>i, name.byteLength);
    store<u32>(base + 8 + 8 * <usize>i, value.byteLength);
    memory.copy(data, addr(name), name.byteLength);
    data += name.byteLength;
    store<u8>(data++, 0);
    memory.copy(data, addr(value), value.byteLength);
    data += value.byteLength;
    store<u8>(data++, 0);
  }
  return out;
}

/** Decodes a serialized map; anything malformed (a host bug) reads as no pairs. */
export function deserializePairs(bytes: ArrayBuffer): Pair[] {
  const pairs = new Array<Pair>();
  const size = <usize>bytes.byteLength;
  if (size < 4) return pairs;
  const base = addr(bytes);
  const count = <usize>load<u32>(base);
  if (count > (size - 4) / 8) return pairs;
  let data: usize = 4 + 8 * count;
  for (let i: usize = 0; i < count; i++) {
    const nameSize = <usize>load<u32>(base + 4 + 8 * i);
    const valueSize = <usize>load<u32>(base + 8 + 8 * i);
    if (data + nameSize + valueSize + 2 > size) return new Array<Pair>();
    const name = String.UTF8.decodeUnsafe(base + data, nameSize);
    data += nameSize + 1;
    const value = String.UTF8.decodeUnsafe(base + data, valueSize);
    data += valueSize + 1;
    pairs.push(new Pair(name, value));
  }
  return pairs;
}
