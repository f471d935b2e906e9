// Methods whose files are being written (temporary; removed when each lands).
#include "peft/method.h"
namespace ssmtune::peft {
std::unique_ptr<Method> make_surm(ModelView&, const Config&) { SSMTUNE_FAIL("SURM: not in this build yet"); }
}  // namespace ssmtune::peft
