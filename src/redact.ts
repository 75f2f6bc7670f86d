/**
 * Passwords out of what logs, errors and `roost config check` show: `scheme://user:pass@host`
 * becomes `scheme://user:***@host`, for each URL of a comma-separated list (a NATS cluster) too.
 * Anything without credentials comes back as it was.
 */
export function hidePassword(url: string): string {
  return url.replace(/(\/\/[^:@/,]*):[^@/,]*@/g, '$1:***@');
}
