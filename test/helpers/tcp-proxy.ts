/**
 * A TCP proxy in front of a real service (PostgreSQL), so a test can take the database away from
 * the gateway and give it back — drop every connection (as pg_terminate_backend or a network
 * blip would), or refuse new ones — without touching the server other tests share.
 */
import net from 'node:net';

export interface TcpProxy {
  port: number;
  /** Destroys every open connection (both sides). */
  dropAll(): void;
  /**
   * While blocked, new connections are reset at once, as a refused or failed connect would be.
   * (Accepting and then closing them cleanly is not what a database outage looks like, and sends
   * postgres.js into a reconnect loop without delay: porsager/postgres#1193.)
   */
  block(): void;
  unblock(): void;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const open = new Set<net.Socket>();
  let blocked = false;
  const server = net.createServer((client) => {
    if (blocked) return void client.resetAndDestroy();
    const upstream = net.connect(target);
    open.add(client);
    open.add(upstream);
    const end = () => {
      client.destroy();
      upstream.destroy();
      open.delete(client);
      open.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    dropAll() {
      for (const s of open) s.destroy();
      open.clear();
    },
    block() {
      blocked = true;
    },
    unblock() {
      blocked = false;
    },
    close() {
      for (const s of open) s.destroy();
      return new Promise((r) => server.close(() => r()));
    },
  };
}
