import type { Client, StartOptions } from './api.js';
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { AdminServer, isLoopbackHost } from './admin/admin-server.js';
import { PrometheusMetrics } from './admin/metrics.js';
import { fanOut, ServingSeries } from './admin/serving-series.js';
import { generateToken, removeToken } from './admin/token-file.js';
import { forgetInstance, recordInstance } from './admin/instance-records.js';
import { LocalClient } from './client.js';
import { invalid, urlOf } from './common/checks.js';
import { reusedFor, systemClock } from './common/clock.js';
import { exitOnEscape } from './common/last-resort.js';
import { createLogger, type Logger } from './common/logger.js';
import { frontDoorWorkerEnv, loadConfig, type FlotillaConfig } from './config/config.js';
import { Controller } from './controller/controller.js';
import { EngineClaim } from './controller/instance-claims.js';
import { ownerServes } from './admin/owner-probe.js';
import { EventLog } from './controller/event-log.js';
import { Scheduler } from './resources/scheduler.js';
import { Dispatcher } from './dataplane/dispatcher.js';
import { FrontDoorWorkers } from './front-door/workers/front-door-workers.js';
import { ProxyServer } from './front-door/server.js';
import { RemoteFrontDoor } from './front-door/supervisor/remote-front-door.js';
import { summarizeShadows } from './dataplane/shadow.js';
import { engineRuntime } from './runtime/docker/engine-runtime.js';
import { TimedRuntime } from './runtime/timed-runtime.js';
import { ImageBuilder } from './runtime/image-builder.js';
import { machineCapacity } from './resources/machine.js';
import { watchNodes } from './resources/node-watch.js';
import { HANDLE_CALL_TIMEOUT_S, HandleGateway } from './admin/handle-gateway.js';
import { runDirOf } from './controller/launcher.js';

/** How long one metrics render serves the scrapes that follow it. */
const METRICS_REUSE_MS = 1_000;

/** The HTTP front door: served in this process, by worker processes, or by a front-door process (which `detach` leaves serving). */
type FrontDoor = Pick<ProxyServer, 'listen' | 'close'> & { detach?: () => Promise<void> };

/** How a start was asked for: a detached start passes the nonce that its /api/health must report. */
export interface Launch {
  nonce?: string;
  /** Record it as this machine's current instance (`flotilla start`), for later commands to find. */
  record?: boolean;
}

/** Refuses admin settings that cannot be served, before anything (containers, state, token file) is touched. */
function checkAdminSettings({ admin }: FlotillaConfig): void {
  if (admin.auth !== 'none') return;
  if (admin.token !== '')
    throw invalid('admin.auth is none but admin.token is set: drop one of FLOTILLA_ADMIN_AUTH=none and FLOTILLA_ADMIN_TOKEN');
  if (!isLoopbackHost(admin.host))
    throw invalid(
      `the admin API may bind to ${admin.host} only with a token: set FLOTILLA_ADMIN_TOKEN (admin.token), or drop FLOTILLA_ADMIN_AUTH=none to have one generated`,
    );
}

/**
 * The admin token: the configured one, none with admin.auth=none, else one
 * generated now and stored in <stateDir>/admin/<instance>.token (mode 0600).
 */
function adminToken(config: FlotillaConfig): { token: string | undefined; generated: boolean } {
  if (config.admin.auth === 'none') return { token: undefined, generated: false };
  if (config.admin.token !== '') return { token: config.admin.token, generated: false };
  return { token: generateToken(config.stateDir, config.instance), generated: true };
}

function eventsPath({ stateDir, instance }: FlotillaConfig): string {
  return join(stateDir, 'state', `${instance}.events.jsonl`);
}

/**
 * Flotilla running in this process: controller, HTTP front door and admin
 * API. `close()` stops this process's part and leaves the replicas running (a
 * later start adopts them); `shutdown()` drains and removes everything. A
 * generated admin token lives as long as the process: it is removed when the
 * control plane closes or shuts down.
 */
export class ControlPlane {
  private closing: Promise<void> | undefined;
  private readonly exited: Promise<void>;
  private markExited: () => void = () => undefined;

  private constructor(
    readonly config: FlotillaConfig,
    readonly client: LocalClient,
    readonly adminUrl: string,
    private readonly controller: Controller,
    private readonly dispatcher: Dispatcher,
    private readonly proxy: FrontDoor,
    private readonly admin: AdminServer,
    private readonly logger: Logger,
    private readonly generatedToken: string | undefined,
    private readonly claim: EngineClaim,
    private readonly stopWatchingNodes: () => void,
    private readonly gateway: HandleGateway,
  ) {
    this.exited = new Promise((resolve) => (this.markExited = resolve));
  }

  static async start(options: Omit<StartOptions, 'detached'> = {}, launch: Launch = {}): Promise<ControlPlane> {
    const config = loadConfig(options);
    checkAdminSettings(config);
    const logger = createLogger(config.logLevel, config.logFormat).child({ instance: config.instance });
    const engine = engineRuntime(config);
    const runtime = new TimedRuntime(engine, config.engineTimeoutS * 1000);
    await runtime.ping();
    const nodes = engine.listNodes?.bind(engine);
    const scheduler = nodes === undefined ? new Scheduler(machineCapacity(config)) : Scheduler.ofNodes(await nodes());
    const stopWatchingNodes = nodes === undefined ? () => undefined : watchNodes({ listNodes: nodes }, scheduler, logger);
    const claim = await EngineClaim.take(runtime, config.instance, ownerServes);
    const metrics = new PrometheusMetrics();
    const series = new ServingSeries(systemClock);
    const events = new EventLog(eventsPath(config), config.eventHistory, systemClock, logger);
    const served = fanOut(metrics, series);
    const render = reusedFor(METRICS_REUSE_MS, () => metrics.render());
    const remote =
      config.http.frontDoor === 'process'
        ? new RemoteFrontDoor(config, logger, {
            failed: (backend) => {
              served.replicaFailure(backend);
              void controller.tick();
            },
            demand: (backend) => controller.demand(backend),
            metrics: served,
            render,
          })
        : undefined;
    const dispatcher = new Dispatcher({
      onReplicaFailure: () => void controller.tick(),
      metrics: served,
      streamIdleTimeoutMs: config.http.streamIdleTimeoutS * 1000,
      maxResponseBytes: config.handle.maxResponseBytes,
      onDemand: (backend) => controller.demand(backend),
      onQueued: (backend) => workers?.contend(backend),
      ...(remote === undefined ? {} : { router: (backend: string) => remote.leases.router(backend) }),
    });
    const workers =
      remote === undefined && config.http.workers > 1
        ? new FrontDoorWorkers(config.http.workers, dispatcher, config.http, config, logger, render, frontDoorWorkerEnv())
        : undefined;
    if (workers !== undefined) metrics.countFrontDoorWorkers(() => workers.serving());
    if (remote !== undefined) metrics.countFrontDoorWorkers(() => remote.serving());
    const dataPlane = remote?.dataPlane(dispatcher) ?? workers?.dataPlane() ?? dispatcher;
    const controller = new Controller({
      config,
      runtime,
      images: new ImageBuilder(runtime, config, logger),
      scheduler,
      dispatcher: dataPlane,
      logger,
      clock: systemClock,
      events,
      autoscalingMetrics: metrics,
    });
    await controller.init().catch(async (error: unknown) => {
      await claim.release();
      throw error;
    });
    const proxy: FrontDoor =
      remote ?? workers ?? new ProxyServer(dispatcher, config.http, logger, config.http.metrics ? render : undefined);
    const { token, generated } = adminToken(config);
    const allowedHosts = config.admin.allowedHosts
      .split(',')
      .filter((name) => name !== '')
      .map((name) => name.toLowerCase());
    const admin = new AdminServer({ token, allowedHosts }, runtime, logger);
    const forget = () => {
      if (generated && token !== undefined) removeToken(config.stateDir, config.instance, token);
    };
    let gateway: HandleGateway | undefined;
    try {
      const listening = urlOf(await (remote?.listen() ?? proxy.listen(config.http.host, config.http.port)));
      const httpUrl = config.http.publicUrl === '' ? listening : config.http.publicUrl.replace(/\/+$/, '');
      const adminUrl = urlOf(await admin.listen(config.admin.host, config.admin.port));
      gateway = new HandleGateway({
        runDir: runDirOf(config),
        getHandle: (endpoint, options) => client.getHandle(endpoint, options, HANDLE_CALL_TIMEOUT_S * 1000),
        logger,
      });
      const client: LocalClient = new LocalClient(
        httpUrl,
        controller,
        dispatcher,
        (): Promise<void> => plane.shutdown(),
        events,
        remote !== undefined
          ? async (endpoint) => summarizeShadows(await remote.shadowCounts(dispatcher, endpoint))
          : workers === undefined
            ? undefined
            : (endpoint) => workers.shadowStats(endpoint),
      );
      const plane: ControlPlane = new ControlPlane(
        config,
        client,
        adminUrl,
        controller,
        dispatcher,
        proxy,
        admin,
        logger,
        generated ? token : undefined,
        claim,
        stopWatchingNodes,
        gateway,
      );
      const frontDoor = { workers: () => remote?.serving() ?? workers?.serving() ?? { serving: 1, configured: 1 }, renderMetrics: render };
      if (launch.record === true) recordInstance({ instance: config.instance, adminUrl, httpUrl, stateDir: config.stateDir });
      admin.serve(client, () => plane.shutdown(), { instance: config.instance, nonce: launch.nonce ?? randomUUID() }, series, frontDoor);
      await claim.record(adminUrl, httpUrl);
      metrics.countReplicasOf(client, dataPlane);
      gateway.start();
      return plane;
    } catch (error) {
      gateway?.close();
      stopWatchingNodes();
      await Promise.allSettled([proxy.detach?.() ?? proxy.close(0), admin.close(), controller.detach()]);
      await claim.release();
      forget();
      forgetInstance(config.stateDir, config.instance);
      throw error;
    }
  }

  /**
   * For a control plane that owns its process (`flotilla start`, detached or not): an exception or rejection that
   * escapes every callback is logged with its stack; then the token file is removed, the plane closes (the claim
   * released, replicas left running) and the process exits for its supervisor to restart it (last-resort.ts).
   */
  exitOnEscape(): void {
    exitOnEscape(this.logger, async () => {
      this.forgetStoredFiles();
      await this.close();
    });
  }

  /** Resolves once the control plane has closed or shut down. */
  whenExited(): Promise<void> {
    return this.exited;
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.admin.close();
      await (this.proxy.detach?.() ?? this.proxy.close(this.graceMs()));
      await this.controller.detach();
      this.dispatcher.close();
      this.forgetStoredFiles();
      await this.claim.release();
      this.stopWatchingNodes();
      this.gateway.close();
      this.logger.info('control plane closed; replicas keep running');
      this.markExited();
    })();
    return this.closing;
  }

  shutdown(): Promise<void> {
    this.closing ??= (async () => {
      await this.proxy.close(this.graceMs());
      await this.controller.shutdown();
      this.client.events.clear();
      this.dispatcher.close();
      await this.admin.close();
      this.forgetStoredFiles();
      await this.claim.release();
      this.stopWatchingNodes();
      this.gateway.close();
      this.markExited();
    })();
    return this.closing;
  }

  /** Removes what this process stored for others to find: its instance record and its generated token. */
  private forgetStoredFiles(): void {
    forgetInstance(this.config.stateDir, this.config.instance);
    if (this.generatedToken !== undefined) removeToken(this.config.stateDir, this.config.instance, this.generatedToken);
  }

  private graceMs(): number {
    return Math.max(0, ...Object.values(this.controller.listBackends()).map((c) => c.gracefulShutdownTimeoutS)) * 1000;
  }
}

/** Starts Flotilla in this process (or, detached, in a background process) and returns its client. */
export async function start(options: StartOptions = {}): Promise<Client> {
  const { detached, ...settings } = options;
  if (detached === true) {
    const { startDetached } = await import('./admin/detached.js');
    return startDetached(settings);
  }
  return (await ControlPlane.start(settings)).client;
}
