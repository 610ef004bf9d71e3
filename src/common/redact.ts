/** The text with the user and password of every URL in it (`scheme://user:secret@host`) replaced by `***`. */
export function hideUrlCredentials(text: string): string {
  return text.replace(/(\w+:\/\/)[^/@\s]+@/g, '$1***@');
}
