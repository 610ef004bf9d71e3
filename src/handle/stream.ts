import { StringDecoder } from 'node:string_decoder';

/**
 * A streamed answer's chunks as a handle's `stream()` yields them: text
 * (text/*) as strings, NDJSON (application/x-ndjson) as one parsed value per
 * line, anything else as Buffers. Text and bytes come in the pieces the
 * network delivered, which need not be the pieces the handler yielded.
 */
export async function* decodeStream(contentType: string, chunks: AsyncIterable<Buffer>): AsyncGenerator<unknown> {
  const type = contentType.split(';')[0]?.trim().toLowerCase() ?? '';
  if (type === 'application/x-ndjson') {
    const decoder = new StringDecoder('utf8');
    let partial = '';
    for await (const chunk of chunks) {
      const lines = (partial + decoder.write(chunk)).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) if (line.trim() !== '') yield JSON.parse(line);
    }
    if ((partial + decoder.end()).trim() !== '') yield JSON.parse(partial);
    return;
  }
  if (type.startsWith('text/')) {
    const decoder = new StringDecoder('utf8');
    for await (const chunk of chunks) {
      const text = decoder.write(chunk);
      if (text !== '') yield text;
    }
    const rest = decoder.end();
    if (rest !== '') yield rest;
    return;
  }
  yield* chunks;
}
