//! The epoch ticker, awake only while some guest executes Wasm.
//!
//! Guests yield at every epoch tick, so that a kill or a request deadline
//! stops even a guest spinning in Wasm within one tick. A ticker that woke
//! every tick regardless cost each idle container (a guest asleep in a host
//! call: sleep, read, poll, accept) 100 wake-ups a second. Instead, each
//! store reports through wasmtime's call hook when it enters and leaves Wasm
//! code, and the one ticker thread of the process parks while none is in it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, Once};
use std::time::Duration;

use wasmtime::{CallHook, EngineWeak, Store};

/// How often a guest executing Wasm yields, so that a kill takes effect.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

struct Ticker {
    /// Stores now executing Wasm code, over every engine of the process.
    in_wasm: AtomicUsize,
    /// Whether the ticker thread waits on `wake`.
    parked: Mutex<bool>,
    wake: Condvar,
    engines: Mutex<Vec<EngineWeak>>,
}

static TICKER: Ticker = Ticker {
    in_wasm: AtomicUsize::new(0),
    parked: Mutex::new(false),
    wake: Condvar::new(),
    engines: Mutex::new(Vec::new()),
};

/// Has `engine`'s epoch advanced while its guests run Wasm.
pub(crate) fn register(engine: &wasmtime::Engine) -> std::io::Result<()> {
    TICKER
        .engines
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(engine.weak());
    static STARTED: Once = Once::new();
    let mut spawned = Ok(());
    STARTED.call_once(|| {
        spawned = std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(tick)
            .map(drop);
    });
    spawned
}

fn tick() {
    loop {
        {
            let mut parked = TICKER.parked.lock().unwrap_or_else(|e| e.into_inner());
            while TICKER.in_wasm.load(Ordering::SeqCst) == 0 {
                *parked = true;
                parked = TICKER.wake.wait(parked).unwrap_or_else(|e| e.into_inner());
            }
            *parked = false;
        }
        std::thread::sleep(EPOCH_TICK);
        let engines = TICKER.engines.lock().unwrap_or_else(|e| e.into_inner());
        for engine in engines.iter().filter_map(EngineWeak::upgrade) {
            engine.increment_epoch();
        }
    }
}

impl Ticker {
    fn entered(&self) {
        if self.in_wasm.fetch_add(1, Ordering::SeqCst) == 0 {
            let parked = self.parked.lock().unwrap_or_else(|e| e.into_inner());
            if *parked {
                self.wake.notify_one();
            }
        }
    }

    fn left(&self) {
        self.in_wasm.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Whether one store executes Wasm right now; kept in its data and moved by
/// its call hook (see [`track`]).
pub(crate) struct WasmActivity {
    in_wasm: bool,
    ticker: &'static Ticker,
}

impl Default for WasmActivity {
    fn default() -> Self {
        WasmActivity {
            in_wasm: false,
            ticker: &TICKER,
        }
    }
}

impl WasmActivity {
    fn on(&mut self, hook: CallHook) {
        let in_wasm = hook.exiting_host();
        if in_wasm != self.in_wasm {
            self.in_wasm = in_wasm;
            if in_wasm {
                self.ticker.entered();
            } else {
                self.ticker.left();
            }
        }
    }
}

impl Drop for WasmActivity {
    /// A store dropped in Wasm (a killed guest, an aborted request) is out.
    fn drop(&mut self) {
        if self.in_wasm {
            self.ticker.left();
        }
    }
}

/// Keeps the ticker awake while `store` executes Wasm.
pub(crate) fn track<T: 'static>(store: &mut Store<T>, activity: fn(&mut T) -> &mut WasmActivity) {
    store.call_hook(move |mut ctx, hook| {
        activity(ctx.data_mut()).on(hook);
        Ok(())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_counts_while_in_wasm_and_not_after_it_is_dropped() {
        static OWN: Ticker = Ticker {
            in_wasm: AtomicUsize::new(0),
            parked: Mutex::new(false),
            wake: Condvar::new(),
            engines: Mutex::new(Vec::new()),
        };
        let count = || OWN.in_wasm.load(Ordering::SeqCst);
        let mut activity = WasmActivity {
            in_wasm: false,
            ticker: &OWN,
        };
        activity.on(CallHook::CallingWasm);
        assert_eq!(count(), 1);
        activity.on(CallHook::CallingHost);
        assert_eq!(count(), 0, "asleep in a host call");
        activity.on(CallHook::CallingWasm); // the host calls back into Wasm
        activity.on(CallHook::ReturningFromWasm);
        activity.on(CallHook::ReturningFromHost);
        assert_eq!(count(), 1);
        drop(activity);
        assert_eq!(count(), 0, "dropped while in Wasm");
    }
}
