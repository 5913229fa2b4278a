//! Timestamp queries around compute passes, for the by-hand GPU benchmarks
//! (`tests/wgpu_coop_bench.rs`, `tests/wgpu_residency.rs`): a query pair per pass, resolved
//! into a buffer and read back as milliseconds per pass.

/// Timestamps of up to `runs` compute passes: the query set, its resolve buffer and a
/// mappable copy.
pub struct PassTimer {
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    stamps: wgpu::Buffer,
    runs: u32,
    period_ns: f64,
}

impl PassTimer {
    /// Room for `runs` passes on a device opened with `TIMESTAMP_QUERY`.
    pub fn new(device: &wgpu::Device, queue: &wgpu::Queue, runs: u32) -> Self {
        let bytes = 16 * u64::from(runs); // two u64 ticks per pass
        let buffer = |label, usage| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * runs,
            }),
            resolved: buffer(
                "timestamps",
                wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            ),
            stamps: buffer(
                "timestamps staging",
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            runs,
            period_ns: f64::from(queue.get_timestamp_period()),
        }
    }

    /// The timestamp writes of pass `run` (< `runs`): its start and its end.
    pub fn writes(&self, run: u32) -> wgpu::ComputePassTimestampWrites<'_> {
        wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * run),
            end_of_pass_write_index: Some(2 * run + 1),
        }
    }

    /// Record the resolve and the copy to the mappable buffer (after the timed passes).
    pub fn resolve(&self, encoder: &mut wgpu::CommandEncoder) {
        encoder.resolve_query_set(&self.queries, 0..2 * self.runs, &self.resolved, 0);
        encoder.copy_buffer_to_buffer(&self.resolved, 0, &self.stamps, 0, self.stamps.size());
    }

    /// Ask for the mapping (after the submit); the caller polls the device.
    pub fn map(&self) {
        self.stamps
            .map_async(wgpu::MapMode::Read, .., |r| r.expect("map timestamps"));
    }

    /// Milliseconds of each pass (after `map` and a poll), and unmap.
    pub fn millis(&self) -> Vec<f64> {
        let ticks: Vec<u64> =
            bytemuck::pod_collect_to_vec(&self.stamps.get_mapped_range(..).expect("stamps"));
        self.stamps.unmap();
        ticks
            .chunks_exact(2)
            .map(|t| t[1].wrapping_sub(t[0]) as f64 * self.period_ns * 1e-6)
            .collect()
    }
}

/// The median of `ms` (sorts it).
pub fn median(ms: &mut [f64]) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}
