/**
 * TLS for the worker <-> coordinator link: loading the coordinator's certificate and key and a
 * worker's trusted CA (every failure a ConfigError with a stable code, raised before anything
 * else starts), and sorting a worker's connection errors into fatal ones (retrying cannot help:
 * the certificate is not trusted, names another host, has expired, or the port does not speak
 * TLS) and retryable ones (refused, reset, unreachable, timed out, DNS not there yet).
 */
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ConfigError } from './errors.ts';

export interface TlsServerFiles {
  /** PEM certificate chain (leaf first). */
  cert: string;
  /** PEM private key of the leaf certificate. */
  key: string;
}

function readPem(file: string, flag: string, code: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(code, `cannot read ${flag} ${file}: ${(err as Error).message}`);
  }
}

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** Every certificate in a PEM bundle; a ConfigError if there is none or one does not parse. */
function parseCertificates(pem: string, file: string, flag: string, code: string): X509Certificate[] {
  const blocks = pem.match(PEM_CERT) ?? [];
  if (blocks.length === 0) {
    throw new ConfigError(code, `${flag} ${file} holds no PEM certificate (expected a '-----BEGIN CERTIFICATE-----' block)`);
  }
  return blocks.map((b, i) => {
    try {
      return new X509Certificate(b);
    } catch (err) {
      throw new ConfigError(code, `${flag} ${file}: certificate ${i + 1} does not parse: ${(err as Error).message}`);
    }
  });
}

/**
 * The coordinator's --tls-cert / --tls-key: both or neither; null when neither is given.
 * Checks that the files are readable, hold a certificate and a private key, and that the key
 * belongs to the certificate, so a mistake shows at start and not as workers' handshake errors.
 */
export function loadTlsServerFiles(certFile: string | undefined, keyFile: string | undefined, now: Date = new Date()): TlsServerFiles | null {
  if (!certFile && !keyFile) return null;
  if (!certFile || !keyFile) {
    throw new ConfigError('TLS_INCOMPLETE', `TLS needs both --tls-cert and --tls-key; got only ${certFile ? '--tls-cert' : '--tls-key'}`);
  }
  const cert = readPem(certFile, '--tls-cert', 'TLS_CERT_UNREADABLE');
  const key = readPem(keyFile, '--tls-key', 'TLS_KEY_UNREADABLE');
  const [leaf] = parseCertificates(cert, certFile, '--tls-cert', 'TLS_CERT_INVALID');
  let privateKey;
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    const encrypted = /ENCRYPTED/.test(key) ? ' (it is passphrase-protected; give an unencrypted key, e.g. openssl pkey -in key.pem -out plain.pem)' : '';
    throw new ConfigError('TLS_KEY_INVALID', `--tls-key ${keyFile} is not a usable PEM private key${encrypted}: ${(err as Error).message}`);
  }
  if (!leaf.checkPrivateKey(privateKey)) {
    throw new ConfigError('TLS_KEY_MISMATCH', `--tls-key ${keyFile} does not belong to the certificate in --tls-cert ${certFile} (subject ${leaf.subject.replace(/\n/g, ', ')})`);
  }
  const validTo = Date.parse(leaf.validTo);
  if (Number.isFinite(validTo) && validTo < now.getTime()) {
    throw new ConfigError('TLS_CERT_EXPIRED', `--tls-cert ${certFile} expired on ${leaf.validTo}; workers would refuse it. Renew the certificate`);
  }
  try {
    createSecureContext({ cert, key });
  } catch (err) {
    throw new ConfigError('TLS_CERT_INVALID', `--tls-cert ${certFile} / --tls-key ${keyFile} are not usable together: ${(err as Error).message}`);
  }
  return { cert, key };
}

/** A worker's --ca: PEM certificate(s) to trust instead of the system's roots; null when not given. */
export function loadCaFile(file: string | undefined): string | null {
  if (!file) return null;
  const pem = readPem(file, '--ca', 'TLS_CA_UNREADABLE');
  parseCertificates(pem, file, '--ca', 'TLS_CA_INVALID');
  return pem;
}

/** Node/OpenSSL certificate-verification codes: the coordinator's certificate was checked and refused. */
const UNTRUSTED = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_UNTRUSTED',
  'INVALID_CA',
]);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CRL_HAS_EXPIRED', 'CRL_NOT_YET_VALID']);
const HOSTNAME = new Set(['ERR_TLS_CERT_ALTNAME_INVALID', 'HOSTNAME_MISMATCH', 'IP_ADDRESS_MISMATCH']);
const REJECTED = new Set([
  'CERT_SIGNATURE_FAILURE',
  'CERT_REVOKED',
  'CERT_REJECTED',
  'CERT_CHAIN_TOO_LONG',
  'PATH_LENGTH_EXCEEDED',
  'INVALID_PURPOSE',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
  'ERROR_IN_CERT_NOT_BEFORE_FIELD',
  'ERROR_IN_CERT_NOT_AFTER_FIELD',
  'ERR_TLS_CERT_SIGNATURE_ALGORITHM_UNSUPPORTED',
]);
/** The port answered, but not with TLS (a plain ws:// coordinator) or with no TLS version in common. */
const NOT_TLS = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG']);
const NO_COMMON_VERSION = new Set(['ERR_SSL_UNSUPPORTED_PROTOCOL', 'ERR_SSL_TLSV1_ALERT_PROTOCOL_VERSION', 'ERR_SSL_NO_PROTOCOLS_AVAILABLE']);

export interface FatalTlsError {
  /** Stable code for logs and tests. */
  code: 'TLS_CERT_UNTRUSTED' | 'TLS_CERT_HOSTNAME_MISMATCH' | 'TLS_CERT_EXPIRED' | 'TLS_CERT_REJECTED' | 'TLS_NOT_TLS' | 'TLS_VERSION_MISMATCH';
  /** What failed and what to do about it. */
  reason: string;
}

/**
 * Sorts one connection error of a worker: a FatalTlsError when retrying cannot help (exit with
 * the reason), or null for everything else (connection refused/reset, timeouts, DNS failures,
 * a coordinator restarting: keep retrying with backoff).
 */
export function classifyTlsError(err: unknown, ctx: { url: string; ca: boolean }): FatalTlsError | null {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : '';
  const raw = typeof e?.message === 'string' ? e.message : String(err);
  // "write EPROTO 80...:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/..." -> "wrong version number"
  const detail = `${code || 'error'}: ${/SSL routines:[^:]*:([^:]+)/.exec(raw)?.[1] ?? raw.split('\n')[0]}`;
  const host = (() => {
    try {
      return new URL(ctx.url).hostname;
    } catch {
      return ctx.url;
    }
  })();
  if (UNTRUSTED.has(code)) {
    return {
      code: 'TLS_CERT_UNTRUSTED',
      reason: ctx.ca
        ? `TLS verification failed: the coordinator's certificate is not trusted by the CA given with --ca (${detail}); pass --ca <file> with the CA that signed the coordinator's certificate (or, if it is self-signed, the certificate itself)`
        : `TLS verification failed: certificate not trusted (${detail}); pass --ca <file> with the coordinator's CA certificate (or, if it is self-signed, the certificate itself)`,
    };
  }
  if (HOSTNAME.has(code)) {
    return {
      code: 'TLS_CERT_HOSTNAME_MISMATCH',
      reason: `TLS verification failed: the coordinator's certificate does not name '${host}' (${detail}); connect with a host name or IP address listed in its subjectAltName, or issue a certificate that lists '${host}'`,
    };
  }
  if (EXPIRED.has(code)) {
    return {
      code: 'TLS_CERT_EXPIRED',
      reason: `TLS verification failed: the coordinator's certificate is outside its validity period (${detail}); renew it, or check this machine's clock`,
    };
  }
  if (REJECTED.has(code)) {
    return { code: 'TLS_CERT_REJECTED', reason: `TLS verification failed: the coordinator's certificate was rejected (${detail}); issue a valid certificate for the coordinator` };
  }
  // OpenSSL's record-layer complaints reach ws as a plain EPROTO with the reason in the message.
  if (NOT_TLS.has(code) || (code === 'EPROTO' && /wrong version number|packet length too long/i.test(raw))) {
    return {
      code: 'TLS_NOT_TLS',
      reason: `the coordinator at ${ctx.url} does not speak TLS (${detail}); use a ws:// URL, or start the coordinator with --tls-cert and --tls-key`,
    };
  }
  if (NO_COMMON_VERSION.has(code) || (code === 'EPROTO' && /unsupported protocol|alert protocol version|no protocols available/i.test(raw))) {
    return { code: 'TLS_VERSION_MISMATCH', reason: `TLS handshake failed: no TLS version in common with the coordinator (${detail}); both sides need TLS 1.2 or newer` };
  }
  return null;
}

/** The coordinator's side of a failed handshake ('tlsClientError'): a stable code and a hint for the operator. */
export function describeTlsClientError(err: unknown): { code: string; hint: string } {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === 'string' ? e.code : 'UNKNOWN';
  const raw = typeof e?.message === 'string' ? e.message : String(err);
  if (code === 'ERR_SSL_HTTP_REQUEST' || /http request/i.test(raw)) {
    return { code, hint: 'a client spoke plain HTTP/ws:// to this TLS port: workers must use wss:// URLs (and health probes HTTPS)' };
  }
  if (/unknown ca|bad certificate|certificate unknown/i.test(raw)) {
    return { code, hint: "a client does not trust this certificate: give workers --ca <file> with this certificate's CA" };
  }
  if (code === 'ECONNRESET') {
    return { code, hint: "a client hung up during the TLS handshake; a worker that does not trust this certificate does this (check the workers' --ca), so do port scanners" };
  }
  return { code, hint: `TLS handshake failed: ${/SSL routines:[^:]*:([^:]+)/.exec(raw)?.[1] ?? raw.split('\n')[0]}` };
}
