// The one knob of the host emulation a test may turn (cuda/emulation/host_simt.h): the order in which a block's
// threads take turns between barriers — thread 0 first (the default) or the last thread first. A kernel without a
// race gives the same bits either way; one that reads shared memory before the barrier that should order it
// usually does not, so tests/emulation/ run each kernel both ways and compare.
#pragma once

namespace ssmtune_simt {

enum class Schedule { forward, reverse };
void set_schedule(Schedule s);
Schedule schedule();  // forward, unless SSMTUNE_EMULATION_SCHEDULE=reverse or set_schedule said otherwise

// Sets the order for its lifetime, then restores the one before.
struct ScheduleScope {
    explicit ScheduleScope(Schedule s) : before(schedule()) { set_schedule(s); }
    ~ScheduleScope() { set_schedule(before); }
    Schedule before;
    ScheduleScope(const ScheduleScope&) = delete;
    ScheduleScope& operator=(const ScheduleScope&) = delete;
};

}  // namespace ssmtune_simt
