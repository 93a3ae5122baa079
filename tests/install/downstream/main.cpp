// A downstream app: includes the umbrella header from the installed package and uses it.
#include <fusionlm/fusionlm.hpp>

int main() {
    fusionlm::ThreadPool pool(2);
    const float x = fusionlm::bf16_to_f32(fusionlm::f32_to_bf16(1.5f));
    return (pool.size() == 2 && x == 1.5f) ? 0 : 1;
}
