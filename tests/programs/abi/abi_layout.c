/* abi_layout.c — prints the layout of every struct in interposer_abi.h as gcc sees it, plus the
   enum values and constants, one fact a line. tests/Interposer.Tests/Abi/AbiLayoutTests.cs
   compares each line with the C# mirror (src/Interposer/Native/Abi.cs).
   When a struct gains a field, add a FIELD line here: the C# side then fails until it matches. */
#include <stddef.h>
#include <stdio.h>
#include "interposer_abi.h"

#define STRUCT(s) printf("struct %s size %zu\n", #s, sizeof(struct s))
#define FIELD(s, f) printf("field %s.%s %zu\n", #s, #f, offsetof(struct s, f))
#define ENUM(e) printf("enum %s %lld\n", #e, (long long)(e))
#define CONST(c) printf("const %s %lld\n", #c, (long long)(c))

int main(void)
{
    STRUCT(ip_alloc_event);
    FIELD(ip_alloc_event, record);
    FIELD(ip_alloc_event, pc);
    FIELD(ip_alloc_event, sp);
    FIELD(ip_alloc_event, bp);
    FIELD(ip_alloc_event, stack_lo);
    FIELD(ip_alloc_event, stack_hi);
    FIELD(ip_alloc_event, frames);
    FIELD(ip_alloc_event, walk_cache);
    FIELD(ip_alloc_event, frees);
    FIELD(ip_alloc_event, kind);
    FIELD(ip_alloc_event, nframes);

    STRUCT(ip_record);
    FIELD(ip_record, address);
    FIELD(ip_record, size);
    FIELD(ip_record, time_ns);
    FIELD(ip_record, tid);
    FIELD(ip_record, stack_id);
    FIELD(ip_record, thread_index);
    FIELD(ip_record, flags);
    FIELD(ip_record, min_count);

    STRUCT(ip_deferred_entry);
    FIELD(ip_deferred_entry, seq);
    FIELD(ip_deferred_entry, address);
    FIELD(ip_deferred_entry, size);
    FIELD(ip_deferred_entry, time_ns);
    FIELD(ip_deferred_entry, tid);
    FIELD(ip_deferred_entry, kind);
    FIELD(ip_deferred_entry, nframes);
    FIELD(ip_deferred_entry, reason);
    FIELD(ip_deferred_entry, thread_index);
    FIELD(ip_deferred_entry, frames);

    STRUCT(ip_shim_api);
    FIELD(ip_shim_api, abi_version);
    FIELD(ip_shim_api, struct_size);
    FIELD(ip_shim_api, deferred_pop);
    FIELD(ip_shim_api, deferred_enqueued);
    FIELD(ip_shim_api, disable);
    FIELD(ip_shim_api, unw_backtrace);
    FIELD(ip_shim_api, deferred_dropped);
    FIELD(ip_shim_api, gc_window);
    FIELD(ip_shim_api, stw_stop);
    FIELD(ip_shim_api, stw_resume);
    FIELD(ip_shim_api, program_regions);
    FIELD(ip_shim_api, static_tls_size);
    FIELD(ip_shim_api, pthread_size);
    FIELD(ip_shim_api, regions_dropped);
    FIELD(ip_shim_api, tls_exclude);
    FIELD(ip_shim_api, tls_exclude_count);
    FIELD(ip_shim_api, departed_modules);
    FIELD(ip_shim_api, root_regions);
    FIELD(ip_shim_api, pending_frees);
    FIELD(ip_shim_api, pending_free_covers);
    FIELD(ip_shim_api, stw_prepare);

    STRUCT(ip_walk_cache);
    FIELD(ip_walk_cache, count);
    FIELD(ip_walk_cache, complete);
    FIELD(ip_walk_cache, stack_id);
    FIELD(ip_walk_cache, uses_rbp);
    FIELD(ip_walk_cache, pc);
    FIELD(ip_walk_cache, sp);
    FIELD(ip_walk_cache, bp);
    FIELD(ip_walk_cache, ra_slot);
    FIELD(ip_walk_cache, bp_slot);
    FIELD(ip_walk_cache, check_valid);
    FIELD(ip_walk_cache, check_count);
    FIELD(ip_walk_cache, bp0_needed);
    FIELD(ip_walk_cache, base);
    FIELD(ip_walk_cache, check_addr);
    FIELD(ip_walk_cache, check_val);
    FIELD(ip_walk_cache, memo);
    FIELD(ip_walk_cache, walks);
    FIELD(ip_walk_cache, memo_off);

    STRUCT(ip_core_config);
    FIELD(ip_core_config, enabled);
    FIELD(ip_core_config, max_frames);
    FIELD(ip_core_config, verbosity);
    FIELD(ip_core_config, exit_work);
    FIELD(ip_core_config, scan_signal);
    FIELD(ip_core_config, scan_interval_s);
    FIELD(ip_core_config, track_regions);
    FIELD(ip_core_config, control);
    FIELD(ip_core_config, control_path);
    FIELD(ip_core_config, batch_frees);
    FIELD(ip_core_config, shard_bits);
    FIELD(ip_core_config, shards);
    FIELD(ip_core_config, applied);
    FIELD(ip_core_config, shard_map);
    FIELD(ip_core_config, whole_hit_frames);
    FIELD(ip_core_config, reserved);

    STRUCT(ip_stopped_thread);
    FIELD(ip_stopped_thread, tid);
    FIELD(ip_stopped_thread, state);
    FIELD(ip_stopped_thread, sp);
    FIELD(ip_stopped_thread, regs);
    FIELD(ip_stopped_thread, tcb);
    FIELD(ip_stopped_thread, reason);

    STRUCT(ip_module);
    FIELD(ip_module, start);
    FIELD(ip_module, end);
    FIELD(ip_module, bias);
    FIELD(ip_module, file_offset);
    FIELD(ip_module, path);

    STRUCT(ip_tls_range);
    FIELD(ip_tls_range, offset);
    FIELD(ip_tls_range, size);

    STRUCT(ip_free_entry);
    FIELD(ip_free_entry, address);
    FIELD(ip_free_entry, stamp);

    STRUCT(ip_free_batch);
    FIELD(ip_free_batch, count);
    FIELD(ip_free_batch, gen);
    FIELD(ip_free_batch, entry);

    STRUCT(ip_region);
    FIELD(ip_region, start);
    FIELD(ip_region, end);

    ENUM(IP_EV_MALLOC);
    ENUM(IP_EV_CALLOC);
    ENUM(IP_EV_REALLOC);
    ENUM(IP_EV_REALLOCARRAY);
    ENUM(IP_EV_MEMALIGN);
    ENUM(IP_EV_POSIX_MEMALIGN);
    ENUM(IP_EV_ALIGNED_ALLOC);
    ENUM(IP_EV_VALLOC);
    ENUM(IP_EV_PVALLOC);
    ENUM(IP_EV_FREE);
    ENUM(IP_EV_FREE_STAMPED);
    ENUM(IP_DEFER_EARLY);
    ENUM(IP_DEFER_NESTED);
    ENUM(IP_DEFER_EXITING);
    ENUM(IP_DEFER_LOADER);
    ENUM(IP_DEFER_UNREGISTERED);
    ENUM(IP_DEFER_STACK);
    ENUM(IP_REC_DEFERRED);
    ENUM(IP_REC_REPORTED);
    ENUM(IP_REC_NO_SCAN);
    ENUM(IP_ANN_NOT_LEAK);
    ENUM(IP_ANN_IGNORE);
    ENUM(IP_ANN_NO_SCAN);
    ENUM(IP_ANN_ALLOC);
    ENUM(IP_ANN_SCAN_AREA);
    ENUM(IP_SCAN_SIGNAL);
    ENUM(IP_SCAN_PERIODIC);
    ENUM(IP_SCAN_EXIT);
    ENUM(IP_STW_STOPPED);
    ENUM(IP_STW_RUNNING);
    ENUM(IP_STW_EXITED);
    ENUM(IP_STW_REASON_SECCOMP);
    ENUM(IP_STW_RAX);
    ENUM(IP_STW_RBX);
    ENUM(IP_STW_RCX);
    ENUM(IP_STW_RDX);
    ENUM(IP_STW_RSI);
    ENUM(IP_STW_RDI);
    ENUM(IP_STW_RBP);
    ENUM(IP_STW_R8);
    ENUM(IP_STW_R9);
    ENUM(IP_STW_R10);
    ENUM(IP_STW_R11);
    ENUM(IP_STW_R12);
    ENUM(IP_STW_R13);
    ENUM(IP_STW_R14);
    ENUM(IP_STW_R15);
    ENUM(IP_STW_RIP);
    ENUM(IP_STW_RSP);
    ENUM(IP_STW_NREGS);

    CONST(IP_ABI_VERSION);
    CONST(IP_DEFERRED_FRAMES);
    CONST(IP_WALK_LEVELS);
    CONST(IP_WALK_MEMO_BYTES);
    CONST(IP_FREE_BATCH);
    CONST(IP_SHARD_STRIDE);
    CONST(IP_SHARD_TIME_OFFSET);
    CONST(IP_SHARD_REGION_SHIFT);
    CONST(IP_SHARD_MAP_BITS);
    /* The shim's shard map entry for sample addresses (AllocationTable.ShardMapIndex must agree). */
    static const uint64_t samples[] = {0x10, 0x5597cc4a2ba0ull, 0x7fe7e0000b70ull, 0x7fe7e0400000ull,
                                       0xffffffffffff0ull, 0xff7fe7e0400000ull};
    for (unsigned i = 0; i < sizeof samples / sizeof samples[0]; i++)
        printf("const IP_SHARD_MAP_INDEX_%llx %llu\n", (unsigned long long)samples[i],
               (unsigned long long)ip_shard_map_index(samples[i]));
    return 0;
}
