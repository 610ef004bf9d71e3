import { FlotillaError } from '../common/errors.js';
import { loadConfig } from '../config/config.js';
import { machineCapacity } from '../resources/machine.js';
import { formatIssue, loadAppFile, type AppFileIssue, type AppSpec } from './app-file.js';
import { describeStep, planDeploy } from './deploy.js';
import { describeCapacity, fitIssues } from './deploy-capacity.js';

/** The machine to check an app file's capacity against; a resource left out is not checked. */
export interface MachineSize {
  cpus?: number;
  memoryMb?: number;
  gpus?: number;
}

/** Whether every replica of the file fits on the machine, placed as the scheduler would place them. */
export function capacityIssues(spec: AppSpec, machine: MachineSize): AppFileIssue[] {
  const capacity = {
    cpus: machine.cpus ?? Number.POSITIVE_INFINITY,
    memoryMb: machine.memoryMb ?? Number.POSITIVE_INFINITY,
    gpus: Array.from({ length: machine.gpus ?? 0 }, (_, index) => ({ id: String(index) })),
  };
  return fitIssues(spec, capacity, { gpus: machine.gpus !== undefined });
}

/** What replicas may reserve on this machine: FLOTILLA_CPUS and the other capacity settings, else what it has. */
export function thisMachine(): Required<MachineSize> {
  const capacity = machineCapacity(loadConfig());
  return { cpus: capacity.cpus, memoryMb: capacity.memoryMb, gpus: capacity.gpus.length };
}

/** 'this machine (2 CPUs, 23969 MB and no GPUs)', or the resources given, e.g. 'a machine with 4 CPUs (memory and GPUs not checked)'. */
export function describeMachine(machine: MachineSize, mine: boolean): string {
  const size = describeCapacity({
    cpus: machine.cpus ?? Number.POSITIVE_INFINITY,
    memoryMb: machine.memoryMb ?? Number.POSITIVE_INFINITY,
    gpus: machine.gpus ?? Number.POSITIVE_INFINITY,
  });
  const unchecked = [
    ...(machine.cpus === undefined ? ['CPUs'] : []),
    ...(machine.memoryMb === undefined ? ['memory'] : []),
    ...(machine.gpus === undefined ? ['GPUs'] : []),
  ];
  const note = unchecked.length === 0 ? '' : ` (${unchecked.join(' and ')} not checked)`;
  return mine ? `this machine (${size})` : `a machine with ${size}${note}`;
}

/**
 * Every check of an app file that needs no control plane: syntax, keys, types, context directories and, when a machine
 * is given, capacity (`described` names that machine in the message). Throws INVALID_ARGUMENT listing every problem; returns the parsed file.
 */
export function checkAppFile(path: string, machine: MachineSize = {}, described = describeMachine(machine, false)): AppSpec {
  const spec = loadAppFile(path);
  const issues = Object.values(machine).some((value) => value !== undefined) ? capacityIssues(spec, machine) : [];
  if (issues.length > 0)
    throw new FlotillaError('INVALID_ARGUMENT', [...issues.map(formatIssue), `(capacity checked against ${described})`].join('\n'), {
      issues,
    });
  return spec;
}

/** A dry run without a control plane: the plan that a deploy to an empty instance would make. */
export function offlinePlan(spec: AppSpec): string[] {
  return planDeploy(spec, { backends: {}, endpoints: {} }).map((step) => `would: ${describeStep(step)}`);
}
