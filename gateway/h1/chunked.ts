// The chunk-size line of a chunked body (RFC 9112 7.1), shared by the request side (conn.ts)
// and the upstream client (client.ts).

/**
 * The size on the line `b[start..eol)` (eol: the index of its LF, which a CR must precede),
 * or -1. Hex digits, at most 12 (2^48: no body beyond that is accepted). `strict`: what
 * follows the digits must be chunk extensions (`;`, or whitespace first) of visible
 * characters — the request side, where a lenient reading is a smuggling risk; otherwise
 * whatever follows the digits is ignored.
 */
export function chunkSizeLine(b: Buffer, start: number, eol: number, strict: boolean): number {
  if (eol === start || b[eol - 1] !== 13) return -1;
  const end = eol - 1;
  let i = start;
  let n = 0;
  for (; i < end; i++) {
    const c = b[i];
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else break;
    if (i - start >= 12) return -1;
    n = n * 16 + d;
  }
  if (i === start) return -1;
  if (strict && i < end) {
    if (b[i] !== 59 /* ; */ && b[i] !== 32 && b[i] !== 9) return -1;
    for (; i < end; i++) {
      const c = b[i];
      if ((c < 0x20 && c !== 9) || c === 0x7f) return -1;
    }
  }
  return n;
}
