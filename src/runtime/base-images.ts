import { FlotillaError, errorMessage } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { ContainerRuntime } from './container-runtime.js';

export type BaseImageKind = 'node' | 'python';

const CHOICES: Record<BaseImageKind, { setting: string; variable: string; online: string; offline: string }> = {
  node: {
    setting: 'baseImage',
    variable: 'FLOTILLA_BASE_IMAGE',
    online: 'node:20-bookworm-slim',
    offline: 'flotilla-local/node:20-bookworm-slim',
  },
  python: {
    setting: 'pythonBaseImage',
    variable: 'FLOTILLA_PYTHON_BASE_IMAGE',
    online: 'debian:bookworm-slim',
    offline: 'flotilla-local/bookworm-minbase:latest',
  },
};

const PULL_TIMEOUT_MS = 20_000;

/**
 * Picks each runtime's base image once, when it is first needed: the configured one; else the online image when the
 * engine has it or can pull it (one pull, bounded in time); else the offline image when the engine has it.
 */
export class BaseImages {
  private readonly chosen = new Map<BaseImageKind, Promise<string>>();
  private readonly pulled = new Map<BaseImageKind, Promise<boolean>>();

  constructor(
    private readonly runtime: ContainerRuntime,
    private readonly configured: Record<BaseImageKind, string>,
    private readonly logger: Logger,
    private readonly pullTimeoutMs = PULL_TIMEOUT_MS,
  ) {}

  of(kind: BaseImageKind): Promise<string> {
    let image = this.chosen.get(kind);
    if (image === undefined) {
      image = this.choose(kind);
      this.chosen.set(kind, image);
      image.catch(() => this.chosen.delete(kind));
    }
    return image;
  }

  private async choose(kind: BaseImageKind): Promise<string> {
    const choice = CHOICES[kind];
    const configured = this.configured[kind];
    const log = this.logger.child({ component: 'base-image' });
    if (configured !== '') {
      log.info(`${kind} base image ${configured} (configured by ${choice.setting})`);
      return configured;
    }
    if ((await this.runtime.imageExists(choice.online)) || (await this.pullOnce(kind, choice.online))) {
      log.info(`${kind} base image ${choice.online}`);
      return choice.online;
    }
    if (await this.runtime.imageExists(choice.offline)) {
      log.info(`${kind} base image ${choice.offline} (${choice.online} cannot be pulled)`);
      return choice.offline;
    }
    throw new FlotillaError(
      'BUILD_FAILED',
      `no ${kind} base image: ${choice.online} is not on the Docker engine and cannot be pulled, and ${choice.offline} does not exist; ` +
        `build the offline one with scripts/base-image.sh, or set ${choice.setting} (${choice.variable}) to an image the engine has`,
    );
  }

  private pullOnce(kind: BaseImageKind, image: string): Promise<boolean> {
    let pulled = this.pulled.get(kind);
    if (pulled === undefined) {
      pulled = this.runtime.pullImage(image, this.pullTimeoutMs).then(
        () => true,
        (error: unknown) => {
          this.logger.debug(`pulling ${image} failed: ${errorMessage(error)}`, { component: 'base-image' });
          return false;
        },
      );
      this.pulled.set(kind, pulled);
    }
    return pulled;
  }
}
