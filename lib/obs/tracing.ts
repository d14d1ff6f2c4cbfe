/**
 * @module
 * Pipeline-stage spans for Deno's built-in OpenTelemetry (`OTEL_DENO=true`). Stages are timed
 * anyway for metrics, so each finished stage is recorded as a span after the fact, with its
 * real start and end: no wrapping of the request path, and nothing at all when tracing is off.
 * The spans join the request's trace through the active context that `Deno.serve` sets up.
 */

/** The part of an OpenTelemetry `Tracer` used here (`@opentelemetry/api` fits). */
export interface TracerLike {
  startSpan(
    name: string,
    options: { startTime: number; attributes?: Record<string, string | number | boolean> },
  ): { end(endTime: number): void };
}

/** Records finished pipeline stages as spans. */
export interface StageTracer {
  /**
   * @param stage the stage name (`facts`, `identity`, `context`, `decide`, `act`)
   * @param startMono start, on the monotonic clock (`performance.now()`)
   * @param endMono end, on the same clock
   */
  stage(stage: string, startMono: number, endMono: number): void;
}

/** Options for {@linkcode createStageTracer}. */
export interface StageTracerOptions {
  /** `performance.timeOrigin`: turns monotonic readings into epoch milliseconds. */
  timeOrigin: number;
}

/** Creates a stage tracer over an OpenTelemetry tracer (`trace.getTracer("edge-personalizer")`). */
export function createStageTracer(tracer: TracerLike, options: StageTracerOptions): StageTracer {
  return {
    stage: (stage, startMono, endMono) => {
      tracer.startSpan(`edge.${stage}`, {
        startTime: options.timeOrigin + startMono,
        attributes: { "edge.stage": stage },
      }).end(options.timeOrigin + endMono);
    },
  };
}
